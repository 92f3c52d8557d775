"""Lightning recipes: AlexNet- and VGG-style classifiers on torchconv_ext's layers.

Run ``python -m recipes fit --config recipes/configs/vgg11_digits.yaml``; see README.md here.
"""

from .models import ARCHS, build_model
from .module import ImageClassifier

__all__ = ["ARCHS", "ImageClassifier", "build_model"]
