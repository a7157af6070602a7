# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Training DDPM / Improved-DDPM UNets with accelerate: options, UNet presets and the loop."""

from .config import TrainingConfig, add_training_args, build_arg_parser
from .loop import DDPMTrainer, TrainingResult, list_checkpoints, train
from .models import UNET_PRESETS, build_unet, unet_config

__all__ = [
    "DDPMTrainer",
    "TrainingConfig",
    "TrainingResult",
    "UNET_PRESETS",
    "add_training_args",
    "build_arg_parser",
    "build_unet",
    "list_checkpoints",
    "train",
    "unet_config",
]
