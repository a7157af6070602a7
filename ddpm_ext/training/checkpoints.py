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
from typing import Any, Callable, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

STATUS_FILE_ENV = "DDPM_EXT_STATUS_FILE"
LAUNCHER_PID_ENV = "DDPM_EXT_LAUNCHER_PID"
WATCH_PARENT_ENV = "DDPM_EXT_STOP_WITH_LAUNCHER"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "ddpm_ext_training.json"


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


# ---------------------------------------------------------------------- checkpoints: find, check, resume, save
class StepCounter:
    """The optimizer-step counter, saved with the checkpoint."""

    def __init__(self) -> None:
        self.global_step = 0

    def state_dict(self) -> Dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.global_step = int(state["global_step"])


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """Complete checkpoints in `output_dir` as (step, path), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX):].isdigit():
            if os.path.isfile(os.path.join(path, CHECKPOINT_MARKER)):
                found.append((int(name[len(CHECKPOINT_PREFIX):]), path))
    return sorted(found)


def normalize(value: Any) -> Any:
    """`value` as JSON would give it back (tuples → lists, unknown objects → str)."""
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def check_checkpoint_compatible(path: str, expected: Dict[str, Any]) -> Dict[str, Any]:
    """
    Read a checkpoint's `ddpm_ext_training.json` and raise `ValueError` naming every model / diffusion setting that
    differs from `expected` (keys "unet", "scheduler", "use_ema", "timestep_sampler", and "class_names" for a
    class-conditional run).

    Returns:
        `dict`: the checkpoint's training state.
    """
    marker = os.path.join(path, CHECKPOINT_MARKER)
    if not os.path.isfile(marker):
        raise ValueError(
            f"resume_from_checkpoint={path!r} is not a complete ddpm-ext checkpoint ({CHECKPOINT_MARKER} missing)"
        )
    with open(marker, encoding="utf-8") as fh:
        saved = json.load(fh)
    problems = []
    for section in ("unet", "scheduler"):
        old, new = normalize(saved.get(section, {})), normalize(expected[section])
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                problems.append(f"{section}.{key}: checkpoint {old.get(key)!r}, this run {new.get(key)!r}")
    for key in ("use_ema", "timestep_sampler", "class_names"):  # class_names: class-conditional runs only
        if saved.get(key) != expected.get(key):
            problems.append(f"{key}: checkpoint {saved.get(key)!r}, this run {expected.get(key)!r}")
    if problems:
        raise ValueError(
            f"the checkpoint {path!r} comes from a different model configuration and cannot be resumed:\n  "
            + "\n  ".join(problems)
            + "\nUse the original flags, or start a new run without --resume_from_checkpoint."
        )
    return saved


# options that change what the remaining steps compute: resuming with another value still works but is not exact
EXACTNESS_KEYS = (
    "seed", "train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "lr_warmup_steps",
    "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "loss_type", "vlb_weight",
    "snr_gamma", "random_flip", "center_crop", "dataset_name", "dataset_config_name", "train_data_dir",
    "eval_nll_steps", "eval_nll_num_images", "ema_inv_gamma", "ema_power", "ema_max_decay", "mixed_precision",
    "class_dropout_prob", "label_column",
)

# AdamW's hyperparameters live in the optimizer's param_groups, which `load_state` restores (the LR schedule restores
# its base rates too), so these flags have no effect on a resumed run
_RESTORED_KEYS = ("learning_rate", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon")


def exactness_differences(saved: Dict[str, Any], config: Dict[str, Any], num_processes: int) -> List[str]:
    """The options (and the process count) that differ between a checkpoint's run and this one, one line each."""
    old = normalize(saved.get("config", {}))
    new = normalize(config)
    lines = [f"{key}: checkpoint {old.get(key)!r}, this run {new.get(key)!r}"
             + (" (ignored: the checkpoint's optimizer keeps its value)" if key in _RESTORED_KEYS else "")
             for key in EXACTNESS_KEYS if key in old and old.get(key) != new.get(key)]
    if "num_processes" in saved and saved["num_processes"] != num_processes:
        lines.append(f"num_processes: checkpoint {saved['num_processes']!r}, this run {num_processes!r}")
    return lines


def resolve_resume(output_dir: str, resume_from_checkpoint: Optional[str], overwrite_output_dir: bool) -> Optional[str]:
    """The checkpoint to resume from (`latest` skips damaged ones), or None for a new run; refuses to start a new run
    over another run's checkpoints unless `overwrite_output_dir`."""
    if resume_from_checkpoint is None:
        found = list_checkpoints(output_dir)
        if found and not overwrite_output_dir:
            raise ValueError(
                f"output_dir {output_dir!r} already holds checkpoints of a run ({os.path.basename(found[-1][1])});"
                " continue it with --resume_from_checkpoint latest, or start over with --overwrite_output_dir"
                " (deletes its checkpoints and metrics)"
            )
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.warning("resume_from_checkpoint='latest': no checkpoint in %s; starting a new run", output_dir)
            return None
        skipped = []
        for _, path in reversed(found):
            problems = verify_checkpoint(path, CHECKPOINT_MARKER)
            if not problems:
                for name, why in skipped:
                    logger.warning("resume_from_checkpoint='latest': skipped the damaged %s (%s); resuming from %s",
                                   name, why, os.path.basename(path))
                return path
            skipped.append((os.path.basename(path), "; ".join(problems)))
        raise ValueError(
            f"resume_from_checkpoint='latest': no checkpoint in {output_dir!r} verifies: "
            + "; ".join(f"{name}: {why}" for name, why in skipped)
        )
    problems = verify_checkpoint(resume_from_checkpoint, CHECKPOINT_MARKER)
    if problems and os.path.isfile(os.path.join(resume_from_checkpoint, CHECKPOINT_MARKER)):
        raise ValueError(
            f"resume_from_checkpoint={resume_from_checkpoint!r} is damaged: {'; '.join(problems)};"
            " pick another checkpoint-<step> folder or use 'latest' (skips damaged checkpoints)"
        )
    return resume_from_checkpoint


def remove_previous_run(output_dir: str) -> List[str]:
    """Delete another run's checkpoints (complete, half-written, being replaced); returns their names."""
    old = sorted(name for name in os.listdir(output_dir)
                 if name.startswith((CHECKPOINT_PREFIX, f".tmp-{CHECKPOINT_PREFIX}", f".old-{CHECKPOINT_PREFIX}")))
    for name in old:
        shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    return old


def write_checkpoint(
    accelerator, output_dir: str, step: int, state: Dict[str, Any], total_limit: Optional[int],
    state_bytes: Callable[[], int],
) -> str:
    """
    `accelerator.save_state` into `.tmp-checkpoint-<step>`, fsync, then the marker `ddpm_ext_training.json` (`state`
    plus each file's size and sha256), then an atomic rename to `checkpoint-<step>`; prune to `total_limit` after a
    successful save. A full disk raises `DiskFullError` (`state_bytes()` estimates the size) and removes the partial
    save. Every process calls it.
    """
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    tmp = os.path.join(output_dir, f".tmp-{CHECKPOINT_PREFIX}{step}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(tmp)
    except (OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err, output_dir, state_bytes()):
            raise disk_full_error(err, tmp, state_bytes()) from err
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = dict(state)
        try:
            fsync_tree(tmp)
            state["files"] = file_manifest(tmp, CHECKPOINT_MARKER)
            with open(os.path.join(tmp, CHECKPOINT_MARKER), "w", encoding="utf-8") as fh:
                json.dump(normalize(state), fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(tmp)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(err, output_dir, state_bytes()):
                raise disk_full_error(err, tmp, state_bytes()) from err
            raise
        if os.path.exists(final):
            old = os.path.join(output_dir, f".old-{CHECKPOINT_PREFIX}{step}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(output_dir)
        if total_limit is not None:
            for _, path in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(path, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def swap_in(src: str, dest: str, old: str) -> None:
    """Move every entry of the complete folder `src` into `dest` by renames (`model_index.json` last, so a loader
    never sees the new index with the old components); replaced entries go through `old`, removed at the end."""
    shutil.rmtree(old, ignore_errors=True)
    os.makedirs(old)
    names = sorted(os.listdir(src), key=lambda n: n == "model_index.json")
    for name in names:
        target = os.path.join(dest, name)
        if os.path.lexists(target):
            os.replace(target, os.path.join(old, name))
        os.replace(os.path.join(src, name), target)
    fsync_dir(dest)
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
