import importlib
from typing import Any

__all__ = ["DDPMExtScheduler", "DDPMExtSchedulerOutput"]


def __getattr__(name: str) -> Any:  # PEP 562: the scheduler module (torch) loads on first use
    if name in __all__:
        value = getattr(importlib.import_module(".scheduling_ddpm_ext", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
