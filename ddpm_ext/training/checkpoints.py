# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Durable files for the training loop: checksums, fsync, atomic folder swaps, disk-full errors, launcher plumbing.

- A checkpoint's marker (`ddpm_ext_training.json`) lists every other file of the checkpoint with its size and
  sha256 (`"files"`); `verify_checkpoint` recomputes them. Files and folders are fsynced before the rename that
  makes a checkpoint visible, so a power loss cannot leave a marked checkpoint with empty files.
- A full disk surfaces from torch as `RuntimeError: basic_ios::clear: iostream error` or `... file write failed`;
  `disk_full_error` turns that (and `OSError(ENOSPC)`) into `DiskFullError("disk full at <path>, N MB needed ...")`.
- Launchers: a training process started by `accelerate launch` (or torchrun) watches its parent; when the launcher
  dies (even by SIGKILL) the process sends itself SIGTERM, so it saves a checkpoint and stops instead of training
  unattended. `ddpm-ext train` reads the main process's exit status from the file named by `DDPM_EXT_STATUS_FILE`.
"""

import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)

STATUS_FILE_ENV = "DDPM_EXT_STATUS_FILE"
LAUNCHER_PID_ENV = "DDPM_EXT_LAUNCHER_PID"
WATCH_PARENT_ENV = "DDPM_EXT_STOP_WITH_LAUNCHER"


class DiskFullError(OSError):
    """The disk filled up during a save; the partial save was removed and earlier saves are intact."""


class TrainingDivergedError(RuntimeError):
    """The loss or the gradients (or the weights) became NaN / infinite; nothing was saved from that point on."""


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: str) -> None:
    """fsync every file and folder under `folder` (and `folder` itself)."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_path(root)


def fsync_dir(path: str) -> None:
    _fsync_path(path)


def file_manifest(folder: str, exclude: str) -> Dict[str, Dict[str, object]]:
    """{relative path: {"size", "sha256"}} of every file under `folder` except `exclude`."""
    manifest = {}
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if rel == exclude:
                continue
            manifest[rel] = {"size": os.path.getsize(path), "sha256": sha256_file(path)}
    return manifest


def verify_checkpoint(path: str, marker: str) -> List[str]:
    """What is wrong with the checkpoint at `path` (empty when it verifies against its marker's checksums)."""
    marker_path = os.path.join(path, marker)
    try:
        with open(marker_path, encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError) as err:
        return [f"{marker} unreadable ({type(err).__name__}: {err})"]
    files = saved.get("files")
    if not isinstance(files, dict):
        return []  # written before checksums were recorded: nothing to compare against
    problems = []
    for rel, info in sorted(files.items()):
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            problems.append(f"{rel} is missing")
            continue
        size = os.path.getsize(full)
        if size != info.get("size"):
            problems.append(f"{rel} has {size} bytes, {info.get('size')} were saved")
        elif sha256_file(full) != info.get("sha256"):
            problems.append(f"{rel} does not match its sha256")
    return problems


def _free_mb(path: str) -> Optional[float]:
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        return shutil.disk_usage(probe or ".").free / 2**20
    except OSError:
        return None


_TORCH_WRITE_ERRORS = ("iostream error", "file write failed", "unexpected pos")


def is_disk_full(err: BaseException, path: Optional[str] = None, needed_bytes: int = 0) -> bool:
    """An `OSError(ENOSPC / EDQUOT)`, one of torch's write errors, or any write error while `path`'s file system
    has less than `needed_bytes` free (torch reports a full disk in several ways)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    if isinstance(err, RuntimeError) and any(text in str(err) for text in _TORCH_WRITE_ERRORS):
        return True
    if path is not None and needed_bytes:
        free = _free_mb(path)
        return free is not None and free * 2**20 < needed_bytes
    return False


def disk_full_error(err: BaseException, path: str, needed_bytes: int) -> DiskFullError:
    free = _free_mb(path)
    free_text = f", {free:.1f} MB free" if free is not None else ""
    return DiskFullError(
        errno.ENOSPC,
        f"disk full at {path}, {needed_bytes / 2**20:.1f} MB needed{free_text} ({type(err).__name__}: {err});"
        " the partial save was removed, earlier checkpoints are kept",
    )


def write_status(status: int) -> None:
    """Record this run's exit status for `ddpm-ext train` (main process only; no-op without the variable)."""
    path = os.environ.get(STATUS_FILE_ENV)
    if not path or int(os.environ.get("RANK", "0") or 0) != 0:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(str(int(status)))
    except OSError as err:
        logger.warning("could not write the exit status to %s: %s", path, err)


def started_by_launcher() -> bool:
    """True under `accelerate launch` / torchrun (or when DDPM_EXT_STOP_WITH_LAUNCHER=1)."""
    forced = os.environ.get(WATCH_PARENT_ENV)
    if forced is not None:
        return forced.lower() in ("1", "true", "yes")
    return "ACCELERATE_DYNAMO_BACKEND" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _processes_with_env(name: str, value: str) -> List[int]:
    """Pids whose environment has `name=value` (Linux /proc; processes of other users are skipped)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_for_processes_with_env(name: str, value: str, poll: float = 0.2) -> None:
    """Block until no live process has `name=value` in its environment, reaping those that are our children."""
    import time

    while True:
        alive = []
        for pid in _processes_with_env(name, value):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _zombie(pid):
                alive.append(pid)
        if not alive:
            return
        time.sleep(poll)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ParentWatch:
    """While active, sends SIGTERM to this process once its parent (the launcher) or the `ddpm-ext train` process
    that started the launcher is gone; polls every second."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.parent = os.getppid()
        launcher = os.environ.get(LAUNCHER_PID_ENV, "")
        self.launcher = int(launcher) if launcher.isdigit() else None

    def _gone(self) -> Optional[int]:
        if os.getppid() != self.parent:
            return self.parent
        if self.launcher is not None and not _alive(self.launcher):
            return self.launcher
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            gone = self._gone()
            if gone is not None:
                logger.warning("the launcher (pid %d) is gone: stopping after a checkpoint", gone)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def __enter__(self) -> "ParentWatch":
        if started_by_launcher():
            self._thread = threading.Thread(target=self._run, name="ddpm-ext-parent-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
