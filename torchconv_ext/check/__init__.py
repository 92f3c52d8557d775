"""``python -m torchconv_ext check``: does every kernel work on this device?

Every Triton kernel family is run against torch's op (float64 reference, torch's own error in
the checked dtype as the yardstick) in every dtype and memory layout, at real layer shapes,
with every autotune config of the conv GEMM kernels forced alone and one case per family past
2**31 elements; without CUDA, the same on tiny shapes under Triton's interpreter.

Files, one job each: ``cases`` (what runs), ``problems`` (inputs and the two ops),
``evaluate`` (running and comparing one problem), ``compare`` (the pass rule), ``observe``
(proof that our kernels ran), ``tuners`` (forcing autotune configs), ``device`` (where it
runs, and whether the device still works), ``sweep`` / ``large`` (the per-config and >2**31
cases), ``runner`` (one case in a process), ``workers`` (parallel processes, time limits),
``results`` / ``report`` / ``environment`` (the output), ``cli`` (the command).
"""

from .cli import main

__all__ = ["main"]
