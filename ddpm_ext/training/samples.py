# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""What the model produces during a run: the sample grid and the held-out bits/dim.

Held-out bits/dim: `eval_nll_num_images` rows split off with seed 0 (the same split for every run seed), only when
`eval_nll_steps > 0`; each image's forward noise comes from its own seeded generator, so every evaluation uses the
same noise and the figure does not depend on the number of processes. A class-conditional run evaluates the
conditional bound (each held-out image with its own label).

Sample grid of a class-conditional run: one row per class (row k = class k), at the pipeline's default guidance;
`eval_batch_size` sets the size: the first `min(K, eval_batch_size)` classes get a row each, with
`max(1, ceil(eval_batch_size / rows))` columns (10 digit classes, eval_batch_size 16: 10 rows × 2 columns), so a grid
holds at least `eval_batch_size` and fewer than `2 · eval_batch_size` images.
"""

import math
from typing import List, Optional, Tuple

import numpy as np
import torch
from accelerate.utils import gather_object

from .batches import SEED_EVAL, SEED_SAMPLES, derive_seed


def held_out_bits_per_dim(pipe, images: torch.Tensor, accelerator, seed: int, timestep_batch_size: int,
                          batch_size: int, class_labels: Optional[torch.Tensor] = None) -> float:
    """Mean bits/dim of `images` under `pipe`, sharded over the processes (every process returns the same value);
    with `class_labels` ([N] ids) the conditional bound."""
    n = images.shape[0]
    mine = list(range(accelerator.process_index, n, accelerator.num_processes))
    results: List[Tuple[int, float]] = []
    if mine:
        device = accelerator.device
        generators = [torch.Generator(device=device).manual_seed(derive_seed(seed, SEED_EVAL, i)) for i in mine]
        extra = {} if class_labels is None else {"class_labels": class_labels[mine].to(device)}
        bpd = pipe.bits_per_dim(
            images[mine].to(device),
            generator=generators,
            **extra,
            timestep_batch_size=timestep_batch_size,
            batch_size=batch_size,
        )
        results = list(zip(mine, bpd.float().cpu().tolist()))
    everything = gather_object(results) if accelerator.num_processes > 1 else results
    return float(np.mean([v for _, v in everything]))


def class_grid_labels(num_classes: int, eval_batch_size: int) -> Tuple[torch.Tensor, int]:
    """The class id of each image of a one-row-per-class grid, row-major, and its number of columns (see the
    module docstring)."""
    rows = min(num_classes, eval_batch_size)
    columns = max(1, math.ceil(eval_batch_size / rows))
    return torch.arange(rows).repeat_interleave(columns), columns


def sample_images(pipe, batch_size: int, seed: int, num_inference_steps: int, device,
                  class_labels: Optional[torch.Tensor] = None) -> np.ndarray:
    """`batch_size` samples as uint8 [N, H, W, C], from the run's fixed sampling seed (the same images every time
    for the same weights); with `class_labels` ([N] ids) each image of its class at the pipeline's default
    guidance."""
    extra = {} if class_labels is None else {"class_labels": class_labels.to(device), "guidance_scale": None}
    images = pipe(
        batch_size=batch_size,
        **extra,
        generator=torch.Generator(device=device).manual_seed(derive_seed(seed, SEED_SAMPLES)),
        num_inference_steps=num_inference_steps,
        output_type="np",
    ).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
