"""Callbacks of the recipes, and the batch-size function ``ThroughputMonitor`` needs."""

from .curves import TrainingCurves
from .errors import ErrorAnalysis
from .features import FeatureMaps, TopPatches
from .filters import FilterGrid
from .predictions import PredictionWriter
from .summary import RunSummary


def batch_size(batch) -> int:
    """Images in an ``(images, labels)`` batch (``ThroughputMonitor``'s ``batch_size_fn``)."""
    return len(batch[0])


__all__ = [
    "ErrorAnalysis",
    "FeatureMaps",
    "FilterGrid",
    "PredictionWriter",
    "RunSummary",
    "TopPatches",
    "TrainingCurves",
    "batch_size",
]
