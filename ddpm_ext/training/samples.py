# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""What the model produces during a run: the sample grid and the held-out bits/dim.

Held-out bits/dim: `eval_nll_num_images` rows split off with seed 0 (the same split for every run seed), only when
`eval_nll_steps > 0`; each image's forward noise comes from its own seeded generator, so every evaluation uses the
same noise and the figure does not depend on the number of processes.
"""

from typing import List, Tuple

import numpy as np
import torch
from accelerate.utils import gather_object

from .batches import SEED_EVAL, SEED_SAMPLES, derive_seed


def held_out_bits_per_dim(pipe, images: torch.Tensor, accelerator, seed: int, timestep_batch_size: int,
                          batch_size: int) -> float:
    """Mean bits/dim of `images` under `pipe`, sharded over the processes (every process returns the same value)."""
    n = images.shape[0]
    mine = list(range(accelerator.process_index, n, accelerator.num_processes))
    results: List[Tuple[int, float]] = []
    if mine:
        device = accelerator.device
        generators = [torch.Generator(device=device).manual_seed(derive_seed(seed, SEED_EVAL, i)) for i in mine]
        bpd = pipe.bits_per_dim(
            images[mine].to(device),
            generator=generators,
            timestep_batch_size=timestep_batch_size,
            batch_size=batch_size,
        )
        results = list(zip(mine, bpd.float().cpu().tolist()))
    everything = gather_object(results) if accelerator.num_processes > 1 else results
    return float(np.mean([v for _, v in everything]))


def sample_images(pipe, batch_size: int, seed: int, num_inference_steps: int, device) -> np.ndarray:
    """`batch_size` samples as uint8 [N, H, W, C], from the run's fixed sampling seed (the same images every time
    for the same weights)."""
    images = pipe(
        batch_size=batch_size,
        generator=torch.Generator(device=device).manual_seed(derive_seed(seed, SEED_SAMPLES)),
        num_inference_steps=num_inference_steps,
        output_type="np",
    ).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
