"""One run at a time in a run folder: the lock a run holds from its start to its end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger
from recipes_testutils import DIGITS, ONE, cli_args, main_error, run_cli, run_interrupted

from recipes.loggers import ResumableCSVLogger
from recipes.run_lock import LOCK_NAME, RunFolderInUseError, RunLock

HOST = socket.gethostname()


def _dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _write_lock(folder: Path, pid: int, host: str = HOST) -> Path:
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host, "started": "2025-01-01T00:00:00"}))
    return path


class LockSeen(L.Callback):
    """What the run folder's lock says while the run trains; optionally, then fail."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.holder: dict | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.holder = json.loads((Path(trainer.log_dir) / LOCK_NAME).read_text())
        if self.fail:
            raise RuntimeError("a failure in training")


class Interrupt(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_a_run_holds_its_folders_lock_until_it_ends(tmp_path):
    """Held while training, by this process on this host; gone after a run that ends, a resumed
    run that Ctrl+C stops, and a run that fails (SIGTERM: the resume tests)."""
    args = ("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs")
    folder = tmp_path / "vgg11_digits" / "version_0"
    seen = LockSeen()
    run_cli(*args, "1", tmp_path=tmp_path, callbacks=[seen])
    assert (seen.holder["pid"], seen.holder["host"]) == (os.getpid(), HOST)
    assert not (folder / LOCK_NAME).exists()
    seen = LockSeen()
    resume = ("--ckpt_path", str(folder / "checkpoints" / "last.ckpt"))
    run_interrupted(*args, "2", *resume, tmp_path=tmp_path, callbacks=[seen, Interrupt()])
    assert seen.holder["pid"] == os.getpid()
    assert not (folder / LOCK_NAME).exists()
    with pytest.raises(RuntimeError, match="a failure in training"):
        run_cli(*args, "1", tmp_path=tmp_path, callbacks=[LockSeen(fail=True)])
    assert (tmp_path / "vgg11_digits" / "version_1").is_dir()
    assert not list(tmp_path.rglob(LOCK_NAME))


def test_a_second_run_in_a_locked_run_folder_is_refused(tmp_path, capsys):
    """While a live process holds the folder's lock, resuming in it is refused with one line
    naming the folder and the process, before anything is written; a lock another host holds
    names the file to remove; a lock whose process ended (kill -9) is taken over."""
    args = ("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs", "1")
    run_cli(*args, tmp_path=tmp_path)
    folder = tmp_path / "vgg11_digits" / "version_0"
    resume = (*args[:-1], "2", "--ckpt_path", str(folder / "checkpoints" / "last.ckpt"))
    alive = os.getppid()  # (the process that started this test's: alive)
    lock = _write_lock(folder, alive)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    err = main_error(capsys, cli_args(*resume, tmp_path=tmp_path)).err
    assert err.count("\n") == 1
    assert err.startswith(
        f"error: run folder {folder} is in use by process {alive} on host {HOST!r} (since "
        "2025-01-01T00:00:00): two runs in one folder would mix their checkpoints and metrics"
    )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

    _write_lock(folder, alive, host="elsewhere")
    err = main_error(capsys, cli_args(*resume, tmp_path=tmp_path)).err
    assert err.startswith(f"error: run folder {folder} is in use by process {alive} on host")
    assert f"remove {lock} and start again" in err

    pid = _dead_pid()
    _write_lock(folder, pid)
    capsys.readouterr()
    cli = run_cli(*resume, tmp_path=tmp_path)
    assert cli.trainer.current_epoch == 2
    assert (
        f"Took over the lock of {folder}: process {pid} on host {HOST!r}, which held it since "
        "2025-01-01T00:00:00, no longer runs" in capsys.readouterr().out
    )
    assert not lock.exists()


def test_run_lock_refuses_a_second_holder_and_is_removed_only_by_its_own(tmp_path):
    """A lock file that was replaced while held (by hand) is not its holder's to remove."""
    first = RunLock.acquire(tmp_path / "run")
    with pytest.raises(RunFolderInUseError, match=f"in use by process {os.getpid()}"):
        RunLock.acquire(tmp_path / "run")
    first.release()
    with RunLock.acquire(tmp_path / "run") as second:  # free again
        assert json.loads(second.path.read_text())["token"] == second.holder["token"]
        second.path.write_text("")  # a lock that names no process is not removed, or taken
        with pytest.raises(RunFolderInUseError, match="which names no process"):
            RunLock.acquire(tmp_path / "run")
        with pytest.warns(UserWarning, match="was replaced while this run held it"):
            second.release()
    assert second.path.exists()


def test_a_lock_naming_this_process_that_it_does_not_hold_is_taken_over(tmp_path, capsys):
    """A lock with this process's id that this process did not take was left by an earlier
    process with the same id — a restarted container's processes get the same ids."""
    (tmp_path / "run").mkdir()
    _write_lock(tmp_path / "run", os.getpid())
    with RunLock.acquire(tmp_path / "run"):
        assert f"Took over the lock of {tmp_path / 'run'}" in capsys.readouterr().out


def test_new_runs_started_at_once_get_their_own_version_folders(tmp_path, monkeypatch):
    """Lightning's logger takes the number after the highest version folder it lists: two runs
    that list before either creates its folder would get the same one. The recipes' logger
    creates the folder when it chooses the number, and passes over one taken meanwhile."""
    monkeypatch.setattr(CSVLogger, "_get_next_version", lambda self: 0)  # both listed: none
    loggers = [ResumableCSVLogger(str(tmp_path), name="runs") for _ in range(2)]
    assert [logger.version for logger in loggers] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["version_0", "version_1"]
