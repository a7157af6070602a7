"""Small models shared by the tests (no downloads)."""

import torch
from diffusers import UNet2DModel


def tiny_unet(
    in_channels: int = 1,
    out_channels: int = None,
    sample_size: int = 8,
    seed: int = 0,
    block_out_channels: tuple = (8, 16),
    norm_num_groups: int = 4,
    num_class_embeds: int = None,
) -> UNet2DModel:
    """A ~20k-parameter UNet2DModel (two down and two up blocks, one layer each), initialised from `seed`;
    out_channels defaults to in_channels (2 × for learned variances); `num_class_embeds` makes it class-conditional
    (classes + the null class)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=block_out_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=norm_num_groups,
        num_class_embeds=num_class_embeds,
    )
