"""One run at a time in a run folder: a lock file, ``<run folder>/.run.lock``, held for the run's
life.

Two processes writing in one run folder (the same resume started twice, or two new runs that
chose the same ``version_N``) would interleave their checkpoints and ``metrics.csv``. The lock
file is created atomically (``O_CREAT | O_EXCL``: of two processes, one creates it, the other
finds it) and names its holder: process id, host and start time. A second run is refused with
a :class:`RunFolderInUseError` naming them. A process killed without cleaning up (``kill -9``,
a power cut) leaves its lock behind: on the same host, a lock whose process no longer runs is
taken over; a lock of another host cannot be checked, so the error names the file to remove.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ._checks import RecipeError, RecipeValueError
from .callbacks.summary import display_path

LOCK_NAME = ".run.lock"

#: The lock files this process holds: a lock naming this process's id but not listed here was
#: left by an earlier process with the same id (a restarted container's processes get the same
#: ids), so it is stale.
_held: set[Path] = set()


class RunFolderInUseError(RecipeError, RuntimeError):
    """Another process holds the run folder's lock (or may: its lock cannot be checked)."""


def _holder() -> dict[str, Any]:
    """What a lock written by this process says: who holds it, since when, and a token that
    tells this lock from a later one of the same process."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def _read(path: Path) -> dict[str, Any] | None:
    """The holder a lock file names; ``None`` when it names none (empty, cut short, foreign)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    if holder["pid"] <= 0 or not isinstance(holder.get("host"), str):
        return None
    return holder


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host. Where that cannot be asked without side
    effects (Windows: ``os.kill`` would end it), every process counts as running."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)  # (signal 0: nothing is sent, only checked)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _one_at_a_time(folder: Path) -> Iterator[None]:
    """Serialise the look at a lock and its replacement among this host's processes (``flock``
    on the folder, where the system has it): two runs that find the same stale lock then
    cannot both take it over, one removing the lock the other has just written."""
    try:
        import fcntl
    except ImportError:  # (Windows: the atomic creation alone)
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # (a file system without flock: the same)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the flock)


class RunLock:
    """The lock of a run folder, held by this process; :meth:`release` it when the run ends
    (also a context manager)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> RunLock:
        """Lock ``folder`` (created if missing) for this process, taking over a lock that a
        process of this host which no longer runs left behind (with a notice); raise
        :class:`RunFolderInUseError` when another process holds it, or may."""
        folder = Path(folder).absolute()  # (released where it was taken, whatever the cwd)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _one_at_a_time(folder):
                return cls._create(folder / LOCK_NAME)
        except OSError as e:  # (a folder that cannot be written: one line, not a traceback)
            raise RecipeValueError(
                f"cannot lock run folder {display_path(folder)}: {e.strerror or e}"
            ) from e

    @classmethod
    def _create(cls, path: Path) -> RunLock:
        """Create the lock file at ``path`` atomically (``O_EXCL``: it must not exist), first
        removing a stale one."""
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                cls._remove_stale(path)  # (returns only once the stale lock is gone)
                continue
            holder = _holder()
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(holder) + "\n")
            except BaseException:  # (a full disk: no lock that names no one left behind)
                path.unlink(missing_ok=True)
                raise
            _held.add(path)
            return cls(path, holder)

    @staticmethod
    def _remove_stale(path: Path) -> None:
        """Remove the lock at ``path`` if its process, on this host, no longer runs; otherwise
        raise :class:`RunFolderInUseError`."""
        holder = _read(path)
        if holder is None:
            if not path.exists():  # (released meanwhile: try again)
                return
            raise RunFolderInUseError(
                f"run folder {display_path(path.parent)} is locked by {display_path(path)}, "
                "which names no process (written by hand, or cut short): if no run is using "
                "the folder, remove that file and start again"
            )
        who = f"process {holder['pid']} on host {holder['host']!r}"
        since = f"since {holder.get('started', '?')}"
        if holder["host"] != socket.gethostname():
            raise RunFolderInUseError(
                f"run folder {display_path(path.parent)} is in use by {who} ({since}), which "
                f"this host cannot check: if that run has ended (a killed job leaves its lock "
                f"behind), remove {display_path(path)} and start again"
            )
        ours = holder["pid"] == os.getpid()
        if (ours and path in _held) or (not ours and pid_alive(holder["pid"])):
            raise RunFolderInUseError(
                f"run folder {display_path(path.parent)} is in use by {who} ({since}): two runs "
                "in one folder would mix their checkpoints and metrics; wait for that run to end "
                f"(if that process is not a run of this folder, remove {display_path(path)})"
            )
        path.unlink(missing_ok=True)
        print(
            f"Took over the lock of {display_path(path.parent)}: {who}, which held it {since}, "
            "no longer runs (a run that was killed)"
        )

    def release(self) -> None:
        """Remove the lock file if it is still this lock (a lock that was removed by hand and
        taken by another run is left to that run, with a warning)."""
        _held.discard(self.path)
        holder = _read(self.path)
        if holder is not None and holder.get("token") == self.holder["token"]:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            warnings.warn(
                f"{display_path(self.path)} was replaced while this run held it (removed by "
                "hand?): another run may have written in the same folder",
                stacklevel=2,
            )

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
