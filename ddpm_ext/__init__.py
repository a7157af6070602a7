"""ddpm-ext: DDPM and Improved-DDPM for Hugging Face diffusers.

The names below load on first use (PEP 562), so `import ddpm_ext` and the `ddpm-ext` command's `--help` do not pay
for torch and diffusers.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "BitsPerDimOutput": ".pipelines",
    "DDPMExtPipeline": ".pipelines",
    "DDPMExtScheduler": ".schedulers",
    "DDPMExtSchedulerOutput": ".schedulers",
}

__all__ = ["BitsPerDimOutput", "DDPMExtPipeline", "DDPMExtScheduler", "DDPMExtSchedulerOutput", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # the next access is a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
