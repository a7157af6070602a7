# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Training DDPM / Improved-DDPM UNets with accelerate: options, UNet presets and the loop.

The names load on first use (PEP 562): `ddpm_ext.training.config` (the options and flags) imports no torch.
"""

import importlib
from typing import Any

_LAZY = {
    "DDPMTrainer": ".loop",
    "TrainingConfig": ".config",
    "TrainingResult": ".loop",
    "UNET_PRESETS": ".models",
    "add_training_args": ".config",
    "build_arg_parser": ".config",
    "build_unet": ".models",
    "list_checkpoints": ".loop",
    "train": ".loop",
    "unet_config": ".models",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
