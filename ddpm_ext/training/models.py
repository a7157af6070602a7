# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""UNet2DModel presets for training: `tiny` (CPU runs and tests) and `ddpm-cifar10` (Ho et al. 2020, 35.7M)."""

import json
import os
from typing import Any, Dict, Optional

from diffusers import UNet2DModel

LEARNED_VARIANCE_TYPES = ("learned", "learned_range")

UNET_PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    },
    # DDPM paper, CIFAR-10 (appendix B): ch 128, mult (1, 2, 2, 2), 2 res blocks, attention at 16×16, dropout 0.1
    "ddpm-cifar10": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
        "attention_head_dim": None,
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "dropout": 0.1,
    },
}


def unet_out_channels(channels: int, variance_type: str) -> int:
    """Output channels for `channels` image channels: doubled for learned variances (prediction, then Σ)."""
    return 2 * channels if variance_type in LEARNED_VARIANCE_TYPES else channels


def check_resolution(resolution: int, block_out_channels) -> None:
    """Raise `ValueError` unless the UNet's `len(block_out_channels) - 1` downsamplings divide `resolution`."""
    factor = 2 ** (len(block_out_channels) - 1)
    if resolution % factor != 0:
        raise ValueError(
            f"resolution={resolution} does not fit this UNet: its {len(block_out_channels) - 1} downsamplings need a"
            f" multiple of {factor} (e.g. {max(factor, resolution - resolution % factor)} or"
            f" {resolution - resolution % factor + factor})"
        )


def unet_config(
    preset: str = "tiny",
    resolution: int = 8,
    channels: int = 1,
    variance_type: str = "fixed_small",
    model_config_name_or_path: Optional[str] = None,
    num_classes: Optional[int] = None,
) -> Dict[str, Any]:
    """
    The `UNet2DModel` config of a preset (or a user's config file) for images `channels × resolution²`.

    Args:
        preset (`str`, defaults to "tiny"): `tiny` or `ddpm-cifar10`.
        resolution (`int`, defaults to 8): image size; must be divisible by 2**(number of down blocks - 1).
        channels (`int`, defaults to 1): image channels.
        variance_type (`str`, defaults to "fixed_small"): the scheduler's; learned types double `out_channels`.
        model_config_name_or_path (`str`, *optional*): a folder with `config.json` or a json file; overrides
            `preset`; `sample_size`, `in_channels` and `out_channels` are still set from the other arguments.
        num_classes (`int`, *optional*): a class-conditional UNet for classes 0..num_classes-1:
            `num_class_embeds = num_classes + 1`, the last id being the learned null class of classifier-free
            guidance. `None`: unconditional (a user config's class embedding is kept as it is).

    Returns:
        `dict`: keyword arguments of `UNet2DModel`.
    """
    if model_config_name_or_path is not None:
        path = model_config_name_or_path
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise ValueError(
                f"model_config_name_or_path={model_config_name_or_path!r} is not a json file or a folder with"
                " config.json (hub ids are not fetched: training runs offline)"
            )
        with open(path, encoding="utf-8") as fh:
            config = UNet2DModel.extract_init_dict(json.load(fh))[0]
    elif preset in UNET_PRESETS:
        config = dict(UNET_PRESETS[preset])
    else:
        raise ValueError(f"model_preset={preset!r} is not supported; allowed values: {', '.join(UNET_PRESETS)}")
    config.update(
        sample_size=resolution, in_channels=channels, out_channels=unet_out_channels(channels, variance_type)
    )
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} is not allowed; expected an integer >= 1")
        if config.get("class_embed_type") is not None:
            raise ValueError(
                f"class_embed_type={config['class_embed_type']!r} of the model config takes no class ids; a"
                " class-conditional UNet needs class_embed_type None (an embedding table of num_class_embeds rows)"
            )
        config["num_class_embeds"] = num_classes + 1
    check_resolution(resolution, config.get("block_out_channels", (224, 448, 672, 896)))
    return config


def build_unet(
    preset: str = "tiny",
    resolution: int = 8,
    channels: int = 1,
    variance_type: str = "fixed_small",
    model_config_name_or_path: Optional[str] = None,
    num_classes: Optional[int] = None,
) -> UNet2DModel:
    """
    A freshly initialised `UNet2DModel` (see `unet_config` for the arguments). Seed torch first for
    reproducible weights.

    Returns:
        `UNet2DModel`
    """
    return UNet2DModel(
        **unet_config(preset, resolution, channels, variance_type, model_config_name_or_path, num_classes)
    )


__all__ = ["UNET_PRESETS", "build_unet", "check_resolution", "unet_config", "unet_out_channels"]
