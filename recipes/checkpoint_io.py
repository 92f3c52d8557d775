"""Checkpoints written atomically: a reader (or a resumed run) sees the old file or the new
one, never a partial one, whatever interrupts the write.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file
lives in the system temp directory; when that is another file system than the checkpoint's
(a tmpfs ``/tmp``, a mounted volume), the final move is a copy into place, which an
interruption can leave half-written, and nothing is synced to disk. Here the temporary file is
created next to the target, synced, renamed over it with ``os.replace`` (atomic on POSIX and
Windows), and the directory entry is synced too.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, but atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # os.open with mode 0o666 (not mkstemp's 0o600): the file gets the umask's permissions.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local-disk saves go through :func:`atomic_torch_save`;
    remote URLs (``s3://`` …) keep Lightning's transactional upload."""

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            atomic_torch_save(checkpoint, path)
