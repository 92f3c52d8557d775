"""Callbacks of the recipes, and the batch-size function ``ThroughputMonitor`` needs."""

from .curves import TrainingCurves
from .filters import FilterGrid
from .predictions import PredictionWriter


def batch_size(batch) -> int:
    """Images in an ``(images, labels)`` batch (``ThroughputMonitor``'s ``batch_size_fn``)."""
    return len(batch[0])


__all__ = ["FilterGrid", "PredictionWriter", "TrainingCurves", "batch_size"]
