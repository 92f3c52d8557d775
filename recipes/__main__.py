"""Entry point: ``python -m recipes fit --config recipes/configs/vgg11_digits.yaml``."""

from recipes.cli import main

if __name__ == "__main__":
    main()
