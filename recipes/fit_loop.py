"""Resuming from a checkpoint written at an epoch's end, also when the run is counted in steps.

Lightning's fit loop treats every restored checkpoint as a restart *inside* its epoch when
``trainer.max_steps`` is set (``restarting`` is forced on for step-counted training, so that a
run that ``max_steps`` cut mid-epoch goes on in that epoch). A checkpoint written in
``on_train_epoch_end`` (the recipes' ``last.ckpt``) after every batch of its epoch ran is then
resumed as if that epoch's end had not run: the end-of-epoch hooks run again (``last.ckpt``
rewritten, the curves given the epoch twice), the epoch counters the loop stops on come out one
ahead (a run bounded by ``max_epochs`` loses its last epoch), the training data loader is
iterated once more (one more draw from torch's generator: other batches and augmentations from
there on) and the logged steps shift by one. :class:`EpochEndResumingFitLoop` resumes such a
checkpoint as Lightning resumes it when the run is counted in epochs: training goes on with the
next epoch. A checkpoint of an epoch cut short (by ``max_steps``, a stop, a mid-epoch
validation) is resumed as Lightning does.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loops.fit_loop import _FitLoop
from lightning.pytorch.loops.loop import _Loop


class EpochEndResumingFitLoop(_FitLoop):
    """Lightning's fit loop, except that a checkpoint written at the end of an epoch that ran
    all its batches is not a restart, however the run is counted (see the module)."""

    @_Loop.restarting.setter
    def restarting(self, restarting: bool) -> None:
        if restarting and self._restored_at_epoch_end():
            _Loop.restarting.fset(self, False)
        else:
            _FitLoop.restarting.fset(self, restarting)

    def _restored_at_epoch_end(self) -> bool:
        """Whether the loop's progress is that of a checkpoint written once its epoch had run
        every batch and reached its end hooks (``processed`` counts epochs that got there)."""
        epoch = self.epoch_progress.current
        ended = epoch.ready == epoch.started == epoch.processed
        return ended and self.epoch_loop.batch_progress.is_last_batch


def resume_epoch_ends_as_ended(trainer: L.Trainer) -> None:
    """Give ``trainer`` the :class:`EpochEndResumingFitLoop` (its own fit loop, state and all,
    switched to the subclass); a fit loop of another class is left as it is."""
    if type(trainer.fit_loop) is _FitLoop:
        trainer.fit_loop.__class__ = EpochEndResumingFitLoop
