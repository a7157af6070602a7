# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""How training processes are started: checks of `accelerate launch`'s arguments and environment, and the CPU
thread count of a single training process. Imports nothing heavy at module level (the `ddpm-ext` parent uses it).
"""

import os
from typing import List, Optional, Sequence

CPU_RUN_HINT = (
    "for a real multi-process CPU run set ACCELERATE_USE_CPU=1 (e.g. `ACCELERATE_USE_CPU=1 ddpm-ext train"
    " --launcher-args '--multi_gpu --num_processes 2' ...`); on one CPU process drop --multi_gpu/--num_processes"
)


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "y", "t")


def _num_processes(launcher_args: Sequence[str]) -> Optional[int]:
    for i, arg in enumerate(launcher_args):
        if arg.startswith("--num_processes="):
            text = arg.split("=", 1)[1]
        elif arg == "--num_processes" and i + 1 < len(launcher_args):
            text = launcher_args[i + 1]
        else:
            continue
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--launcher-args: --num_processes {text!r} is not an integer") from None
    return None


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def check_launcher_args(launcher_args: List[str], environ=os.environ) -> None:
    """Refuse `--multi_gpu` / `--num_processes N>1` on a machine without GPUs unless ACCELERATE_USE_CPU (or `--cpu`)
    asks for a CPU run: accelerate would otherwise start N unconnected copies that all write into one output_dir.
    Raises `ValueError`. Imports torch only when more than one process is asked for."""
    num = _num_processes(launcher_args)
    multi = "--multi_gpu" in launcher_args or (num is not None and num > 1)
    cpu = _truthy(environ.get("ACCELERATE_USE_CPU")) or "--cpu" in launcher_args
    if multi and not cpu and not _has_gpu():
        asked = " ".join(a for a in launcher_args)
        raise ValueError(
            f"--launcher-args {asked!r} asks for several processes, but this machine has no GPU: accelerate would"
            f" start unconnected copies writing into one output_dir; {CPU_RUN_HINT}"
        )


def unconnected_copies_error(environ=os.environ) -> Optional[str]:
    """In a training process: the error when the launcher started several processes (WORLD_SIZE > 1) that will not
    form one run (no GPU and no ACCELERATE_USE_CPU), else None."""
    try:
        world_size = int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world_size <= 1 or _truthy(environ.get("ACCELERATE_USE_CPU")) or _has_gpu():
        return None
    return (
        f"the launcher started {world_size} processes (WORLD_SIZE={world_size}, e.g. `accelerate launch --multi_gpu`)"
        f" on a machine without GPUs; they would train as unconnected copies into one output_dir; {CPU_RUN_HINT}"
    )


def _launcher_chose_threads(launcher_pid: int) -> Optional[bool]:
    """Whether the launcher process (`accelerate launch`, our parent) was given a thread count: OMP_NUM_THREADS in its
    own environment or --num_cpu_threads_per_process on its command line. None where /proc cannot tell (not Linux)."""
    try:
        with open(f"/proc/{launcher_pid}/environ", "rb") as fh:
            environ = fh.read().split(b"\0")
        with open(f"/proc/{launcher_pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return None
    flag = b"--num_cpu_threads_per_process"
    return any(e.startswith(b"OMP_NUM_THREADS=") for e in environ) or any(
        a == flag or a.startswith(flag + b"=") for a in argv
    )


def cpu_threads_for_one_process(environ=os.environ, launcher_pid: Optional[int] = None) -> Optional[int]:
    """The thread count a lone CPU training process started by `accelerate launch` should use, or None to leave it.

    accelerate sets OMP_NUM_THREADS=1 for a single CPU process unless it is told otherwise, which makes training
    about 1.8x slower on a multi-core machine. Decision: when this process was started by accelerate (its
    ACCELERATE_* launch variables are set), is the only process (WORLD_SIZE unset or 1), runs on the CPU, and
    OMP_NUM_THREADS=1 came from accelerate's default (the launcher itself had no OMP_NUM_THREADS and no
    --num_cpu_threads_per_process; read from /proc, and where that cannot be read, assumed), use every CPU this
    process may run on (its affinity set). A thread count the user gave, a plain `python -m ddpm_ext.training` run
    and multi-process runs (accelerate divides the cores between processes there) are left as they are.
    """
    if environ.get("OMP_NUM_THREADS") != "1" or "ACCELERATE_DYNAMO_BACKEND" not in environ:
        return None
    if environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return None
    if _launcher_chose_threads(os.getppid() if launcher_pid is None else launcher_pid):
        return None
    if not _truthy(environ.get("ACCELERATE_USE_CPU")) and _has_gpu():
        return None
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return available if available > 1 else None


__all__ = ["check_launcher_args", "cpu_threads_for_one_process", "unconnected_copies_error"]
