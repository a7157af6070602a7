# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Which images each process trains on at each micro-step, and where they come from.

Data order and randomness are functions of (seed, position), not of a running RNG: epoch `e` visits the training
rows in the permutation seeded by (seed, e); micro-step `m` draws its timesteps, noise and flips from a generator
seeded by (seed, m) (see `loop.DDPMTrainer._draw`). Every process draws the whole global batch
(`train_batch_size × num_processes`) and keeps its own slice, so process `r` trains on rows `[r·B, (r+1)·B)` of
each global batch, and 2 processes × B see exactly the data of 1 process × 2B. Resuming at step `s` needs only
`s`: the last incomplete global batch of an epoch is dropped; accumulation may span epochs.
"""

from typing import Iterator, Optional, Tuple

import numpy as np
import torch

from .. import data as ddpm_data

# keys that decorrelate the seeded streams of one run
SEED_DATA, SEED_STEP, SEED_EVAL, SEED_SAMPLES = 1, 2, 3, 4


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy `SeedSequence`), decorrelated across keys."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class BatchSchedule:
    """Which rows each process trains on at micro-step `m` (see the module docstring)."""

    def __init__(self, num_rows: int, batch_size: int, num_processes: int, process_index: int, seed: int):
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.global_batch_size = batch_size * num_processes
        self.process_index = process_index
        self.seed = seed
        self.micro_steps_per_epoch = num_rows // self.global_batch_size
        self._perm: Tuple[int, Optional[torch.Tensor]] = (-1, None)

    def indices(self, micro_step: int) -> torch.Tensor:
        epoch, position = divmod(micro_step, self.micro_steps_per_epoch)
        if self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, SEED_DATA, epoch))
            self._perm = (epoch, torch.randperm(self.num_rows, generator=gen))
        start = position * self.global_batch_size + self.process_index * self.batch_size
        return self._perm[1][start : start + self.batch_size]


class TensorSource:
    """Pre-decoded uint8 images; a batch is an index into one tensor (no per-step PIL work)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return ddpm_data.uint8_to_pixel_values(self.images[indices])


class DatasetSource(torch.utils.data.Dataset):
    """A `datasets.Dataset` with a `set_transform`; a batch is decoded from PIL on demand."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices) -> torch.Tensor:
        return torch.stack(self.dataset[[int(i) for i in indices]]["pixel_values"])


def micro_batches(
    schedule: BatchSchedule, source, start_micro: int, seed: int, num_workers: int = 0, pin_memory: bool = False
) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
    """(micro-step, indices, pixel values [B, C, H, W] on the CPU) from `start_micro` on, forever.

    A `DatasetSource` with `num_workers > 0` decodes in DataLoader workers (same batches, same order).
    """
    if isinstance(source, DatasetSource) and num_workers > 0:

        class _Indices:
            def __iter__(inner):
                m = start_micro
                while True:
                    yield schedule.indices(m)
                    m += 1

        loader = torch.utils.data.DataLoader(
            source,
            sampler=_Indices(),
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(derive_seed(seed, SEED_DATA, start_micro)),
            persistent_workers=False,
        )
        m = start_micro
        for batch in loader:
            yield m, schedule.indices(m), batch
            m += 1
    else:
        m = start_micro
        while True:
            indices = schedule.indices(m)
            yield m, indices, source[indices]
            m += 1
