"""The fallback backend: every op built from ATen, for any device torch supports."""
