"""Checkpoints written atomically: a reader (or a resumed run) sees the old file or the new
one, never a partial one, whatever interrupts the write; a write that fails (a full disk, a
folder without write permission) stops the run with a one-line :class:`CheckpointWriteError`.
:func:`read_checkpoint` refuses a file that is not a readable Lightning checkpoint before a run
starts.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file
lives in the system temp directory; when that is another file system than the checkpoint's
(a tmpfs ``/tmp``, a mounted volume), the final move is a copy into place, which an
interruption can leave half-written, and nothing is synced to disk. Here the temporary file is
created next to the target, synced, renamed over it with ``os.replace`` (atomic on POSIX and
Windows), and the directory entry is synced too. A process killed in the middle of a write
(``kill -9``, a power cut) leaves its temporary file behind: :func:`remove_stale_temporaries`
removes those of a checkpoint folder, and the recipe CLI calls it when a run starts.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ._checks import RecipeError, RecipeValueError

# What a Lightning checkpoint holds to be loaded at all, and to resume training.
CHECKPOINT_KEYS = ("state_dict", "pytorch-lightning_version")
RESUME_KEYS = ("epoch", "global_step", "optimizer_states")

# The temporary files of :func:`atomic_torch_save`: ``.<file name>.<32 hex digits>.tmp``.
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


class CheckpointWriteError(RecipeError, OSError):
    """A checkpoint could not be written (the earlier one stays whole)."""


def read_checkpoint(path: str | os.PathLike, *, for_fit: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path``, memory-mapped, after checking that it is one Lightning can
    load (``for_fit``: and resume training from) the way LightningCLI reads it
    (``weights_only=True``); else a :class:`RecipeValueError` naming ``--ckpt_path``, so a
    truncated, empty or foreign file stops the run before anything is written."""

    def refuse(why: str) -> RecipeValueError:
        return RecipeValueError(
            f"--ckpt_path {str(path)!r} is not a readable Lightning checkpoint: {why}"
        )

    if not zipfile.is_zipfile(path):  # torch.save's format is a zip archive, its index at the end
        raise refuse("not a file torch.save wrote, or one cut short (an interrupted copy?)")
    try:  # (torch.load reads no checksums: a damaged tensor would load as wrong numbers)
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise refuse(f"a damaged archive ({e})") from e
    if damaged is not None:
        raise refuse(f"its part {damaged!r} fails its checksum (a damaged copy?)")
    try:
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as e:  # objects beyond tensors and plain data
        raise refuse(
            "it holds objects beyond tensors and plain data, which torch.load(weights_only=True) "
            "refuses"
        ) from e
    except Exception as e:  # a damaged archive
        raise refuse(str(e).strip().split("\n")[0] or type(e).__name__) from e
    if not isinstance(saved, dict) or any(k not in saved for k in CHECKPOINT_KEYS):
        raise refuse(f"it holds no {' or '.join(map(repr, CHECKPOINT_KEYS))}: not Lightning's")
    missing = [k for k in RESUME_KEYS if k not in saved] if for_fit else []
    if missing:
        raise RecipeValueError(
            f"--ckpt_path {str(path)!r} holds no {', '.join(missing)}: training cannot resume "
            "from it (a weights-only checkpoint?); it can be evaluated with validate, test or "
            "predict"
        )
    return saved


def temporary_path(path: Path) -> Path:
    """A new temporary file name for writing ``path``: ``.<name>.<random hex>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named as :func:`atomic_torch_save`'s temporary files are."""
    return _TEMPORARY.fullmatch(path.name) is not None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files an interrupted :func:`atomic_torch_save` left in ``folder``
    (only files named exactly as it names them, not in subfolders); return them. Call it where
    no write is under way in ``folder``, as when a run starts."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if is_temporary(path) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, but atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
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
            try:
                atomic_torch_save(checkpoint, path)
            except OSError as e:
                raise CheckpointWriteError(
                    f"cannot write checkpoint {path}: {e.strerror or e}; the earlier checkpoints, "
                    "if any, are whole"
                ) from e
