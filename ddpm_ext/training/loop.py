# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""The reusable training loop: accelerate (DDP, mixed precision), EMA, exact resume, signals, bits/dim, publishing.

Decisions:

- Data order and randomness are functions of (seed, position), not of a running RNG: epoch `e` visits the training
  rows in the permutation seeded by (seed, e); micro-step `m` draws its timesteps, noise and flips from a generator
  seeded by (seed, m). Every process draws the whole global batch (`train_batch_size × num_processes`) and keeps
  its own slice, so process `r` trains on rows `[r·B, (r+1)·B)` of each global batch, and 2 processes × B see
  exactly the data, noise and timesteps of 1 process × 2B. Resuming at step `s` needs only `s`: the last
  incomplete global batch of an epoch is dropped; accumulation may span epochs.
- Global torch / numpy / python RNG states (dropout, random crops) are saved and restored by
  `accelerator.save_state` / `load_state`; with random crops, exact resume needs `dataloader_num_workers=0`.
- Checkpoints: `accelerator.save_state` into `.tmp-checkpoint-<step>`, fsync, then `ddpm_ext_training.json` (which
  marks a checkpoint complete and lists each file's size and sha256), then an atomic rename to `checkpoint-<step>`.
  `latest` resumes from the newest checkpoint whose checksums verify. A new run into a folder with checkpoints is
  refused unless `overwrite_output_dir`. The end-of-run pipeline goes to `.tmp-pipeline`, then is renamed into place. Pruning to `checkpoints_total_limit` happens
  after a successful save. The EMA, the LR schedule, the timestep sampler and the step counter are registered
  with `accelerator.register_for_checkpointing`.
- SIGTERM / SIGINT: the first one sets a flag; the run saves a checkpoint at the next step boundary (a
  multi-process run agrees on the flag every `logging_steps` steps) and returns with `interrupted_by` set; the
  command line then exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as shells report a
  killed process, so job schedulers see the run as unfinished. A second Ctrl-C aborts at once. The handlers stay
  installed until the end-of-run outputs are written. Under a launcher, a thread also watches the launcher and sends
  SIGTERM to this process when it is gone (see `checkpoints.ParentWatch`).
- Divergence: the loss / gradient-norm values fetched for logging are checked for NaN / inf (no extra host sync),
  and the weights before every save (one sync per save); either raises `TrainingDivergedError`.
- Host syncs: per-step losses and gradient norms stay on the device and are fetched every `logging_steps` steps
  (one gather), then written to `output_dir/metrics.jsonl` one line per step.
- Held-out bits/dim: `eval_nll_num_images` rows split off with seed 0 (the same split for every run seed), only
  when `eval_nll_steps > 0`; each image's forward noise comes from its own seeded generator, so every evaluation
  uses the same noise and the figure does not depend on the number of processes.
"""

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .. import data as ddpm_data
from ..losses import training_losses
from ..pipelines.pipeline_ddpm_ext import DDPMExtPipeline
from ..reporting import _parse_metrics_line, image_grid, plot_training_curves, read_metrics, write_model_card
from ..resample import create_sampler
from ..schedulers.scheduling_ddpm_ext import DDPMExtScheduler
from .checkpoints import (
    DiskFullError,
    ParentWatch,
    TrainingDivergedError,
    disk_full_error,
    file_manifest,
    fsync_dir,
    fsync_tree,
    is_disk_full,
    verify_checkpoint,
)
from .config import TrainingConfig
from .models import unet_config

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "ddpm_ext_training.json"
METRICS_FILE = "metrics.jsonl"
SAMPLE_GRID = "sample_grid.png"
CURVES_PLOT = "training_curves.png"
_SEED_DATA, _SEED_STEP, _SEED_EVAL, _SEED_SAMPLES = 1, 2, 3, 4


@dataclass
class TrainingResult:
    """
    What a training run left behind.

    Args:
        output_dir (`str`): the run's folder.
        global_step (`int`): optimizer steps done.
        interrupted_by (`int`, *optional*): the signal number that stopped the run early (after a checkpoint).
        checkpoint (`str`, *optional*): the last complete checkpoint.
        final_loss (`float`, *optional*): mean training loss of the last logged steps.
        final_bits_per_dim (`float`, *optional*): the last held-out bits/dim.
        hub_url (`str`, *optional*): the pushed commit.
        push_error (`str`, *optional*): why a requested push failed (the local folder is intact).
    """

    output_dir: str
    global_step: int
    interrupted_by: Optional[int] = None
    checkpoint: Optional[str] = None
    final_loss: Optional[float] = None
    final_bits_per_dim: Optional[float] = None
    hub_url: Optional[str] = None
    push_error: Optional[str] = None


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy `SeedSequence`), decorrelated across keys."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """Complete checkpoints in `output_dir` as (step, path), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX):].isdigit():
            if os.path.isfile(os.path.join(path, CHECKPOINT_MARKER)):
                found.append((int(name[len(CHECKPOINT_PREFIX):]), path))
    return sorted(found)


def _normalize(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def check_checkpoint_compatible(path: str, expected: Dict[str, Any]) -> Dict[str, Any]:
    """
    Read a checkpoint's `ddpm_ext_training.json` and raise `ValueError` naming every model / diffusion setting that
    differs from `expected` (keys "unet", "scheduler", "use_ema", "timestep_sampler").

    Returns:
        `dict`: the checkpoint's training state.
    """
    marker = os.path.join(path, CHECKPOINT_MARKER)
    if not os.path.isfile(marker):
        raise ValueError(
            f"resume_from_checkpoint={path!r} is not a complete ddpm-ext checkpoint ({CHECKPOINT_MARKER} missing)"
        )
    with open(marker, encoding="utf-8") as fh:
        saved = json.load(fh)
    problems = []
    for section in ("unet", "scheduler"):
        old, new = _normalize(saved.get(section, {})), _normalize(expected[section])
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                problems.append(f"{section}.{key}: checkpoint {old.get(key)!r}, this run {new.get(key)!r}")
    for key in ("use_ema", "timestep_sampler"):
        if saved.get(key) != expected[key]:
            problems.append(f"{key}: checkpoint {saved.get(key)!r}, this run {expected[key]!r}")
    if problems:
        raise ValueError(
            f"the checkpoint {path!r} comes from a different model configuration and cannot be resumed:\n  "
            + "\n  ".join(problems)
            + "\nUse the original flags, or start a new run without --resume_from_checkpoint."
        )
    return saved


# options that change what the remaining steps compute: resuming with another value still works but is not exact
EXACTNESS_KEYS = (
    "seed", "train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "lr_warmup_steps",
    "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm", "loss_type", "vlb_weight",
    "snr_gamma", "random_flip", "center_crop", "dataset_name", "dataset_config_name", "train_data_dir",
    "eval_nll_steps", "eval_nll_num_images", "ema_inv_gamma", "ema_power", "ema_max_decay", "mixed_precision",
)

# AdamW's hyperparameters live in the optimizer's param_groups, which `load_state` restores (the LR schedule restores
# its base rates too), so these flags have no effect on a resumed run
_RESTORED_KEYS = ("learning_rate", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon")


def exactness_differences(saved: Dict[str, Any], config: Dict[str, Any], num_processes: int) -> List[str]:
    """The options (and the process count) that differ between a checkpoint's run and this one, one line each."""
    old = _normalize(saved.get("config", {}))
    new = _normalize(config)
    lines = [f"{key}: checkpoint {old.get(key)!r}, this run {new.get(key)!r}"
             + (" (ignored: the checkpoint's optimizer keeps its value)" if key in _RESTORED_KEYS else "")
             for key in EXACTNESS_KEYS if key in old and old.get(key) != new.get(key)]
    if "num_processes" in saved and saved["num_processes"] != num_processes:
        lines.append(f"num_processes: checkpoint {saved['num_processes']!r}, this run {num_processes!r}")
    return lines


class _StepCounter:
    """The optimizer-step counter, saved with the checkpoint."""

    def __init__(self) -> None:
        self.global_step = 0

    def state_dict(self) -> Dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.global_step = int(state["global_step"])


class _SignalFlag:
    """Records SIGTERM / SIGINT; the loop checks it at step boundaries. A second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:  # the first signal decides the exit status
            self.signum = signum
        logger.warning("received %s: saving a checkpoint at the next step boundary", signal.Signals(signum).name)

    def __enter__(self) -> "_SignalFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _BatchSchedule:
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
            gen = torch.Generator().manual_seed(derive_seed(self.seed, _SEED_DATA, epoch))
            self._perm = (epoch, torch.randperm(self.num_rows, generator=gen))
        start = position * self.global_batch_size + self.process_index * self.batch_size
        return self._perm[1][start : start + self.batch_size]


class _TensorSource:
    """Pre-decoded uint8 images; a batch is an index into one tensor (no per-step PIL work)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return ddpm_data.uint8_to_pixel_values(self.images[indices])


class _DatasetSource(torch.utils.data.Dataset):
    """A `datasets.Dataset` with a `set_transform`; a batch is decoded from PIL on demand."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices) -> torch.Tensor:
        return torch.stack(self.dataset[[int(i) for i in indices]]["pixel_values"])


class DDPMTrainer:
    """
    Trains a `UNet2DModel` as a DDPM / Improved-DDPM with accelerate and writes a self-contained
    `DDPMExtPipeline`, a model card, sample grids and a loss / bits-per-dim plot into `config.output_dir`.

    Args:
        config ([`TrainingConfig`]): the options; validated here.

    Use `train(config)` for a whole run; `setup()` then `train_steps(n)` runs steps without checkpoints or
    evaluation (benchmarks).
    """

    def __init__(self, config: TrainingConfig):
        self.config = config.validate()
        self.is_setup = False

    # ------------------------------------------------------------------ setup (every input error is raised here)
    def setup(self) -> "DDPMTrainer":
        cfg = self.config
        default_data = cfg.dataset_name is None and cfg.train_data_dir is None
        self.channels = cfg.channels or (1 if default_data else 3)
        self.unet_kwargs = unet_config(
            cfg.model_preset, cfg.resolution, self.channels, cfg.variance_type, cfg.model_config_name_or_path
        )
        self.noise_scheduler = DDPMExtScheduler(
            num_train_timesteps=cfg.ddpm_num_steps,
            beta_schedule=cfg.ddpm_beta_schedule,
            variance_type=cfg.variance_type,
            prediction_type=cfg.prediction_type,
        )
        self.fingerprint = {
            "unet": self.unet_kwargs,
            "scheduler": {k: v for k, v in self.noise_scheduler.config.items() if not k.startswith("_")},
            "use_ema": cfg.use_ema,
            "timestep_sampler": cfg.timestep_sampler,
        }
        self.resume_path = self._resolve_resume()
        if self.resume_path is not None:
            self.resume_state = check_checkpoint_compatible(self.resume_path, self.fingerprint)

        mixed_precision = cfg.mixed_precision
        if mixed_precision is None:
            mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        cpu_only = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        if mixed_precision == "fp16" and cpu_only:
            logger.warning(
                "mixed_precision='fp16' is not supported on the CPU (accelerate would silently train in fp32);"
                " training in fp32. Use --mixed_precision bf16 for reduced precision on the CPU."
            )
            mixed_precision = "no"
        self.mixed_precision = mixed_precision
        if cfg.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        project = ProjectConfiguration(
            project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, cfg.logging_dir)
        )
        self.accelerator = accelerator = Accelerator(
            mixed_precision=mixed_precision,
            log_with=None if cfg.logger == "none" else cfg.logger,
            project_config=project,
        )
        if cfg.logger == "wandb":
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                raise ValueError("logger='wandb' needs `pip install wandb`; allowed loggers: tensorboard, wandb, none")
        if cfg.push_to_hub and accelerator.is_main_process:  # a bad id, token or endpoint fails now, not at the end
            from ..hub import check_push_access

            repo_id = cfg.hub_model_id or os.path.basename(os.path.abspath(cfg.output_dir))
            check_push_access(repo_id, token=cfg.hub_token, private=cfg.hub_private_repo)

        self._load_data(default_data)
        num_train = len(self.train_source)
        self.schedule = _BatchSchedule(
            num_train, cfg.train_batch_size, accelerator.num_processes, accelerator.process_index, cfg.seed
        )
        if self.schedule.micro_steps_per_epoch < 1:
            raise ValueError(
                f"the training split has {num_train} images, fewer than one global batch of train_batch_size"
                f" {cfg.train_batch_size} × {accelerator.num_processes} processes; lower train_batch_size"
            )
        steps_per_epoch = self.schedule.micro_steps_per_epoch / cfg.gradient_accumulation_steps
        self.max_train_steps = cfg.max_train_steps or math.ceil(cfg.num_epochs * steps_per_epoch)

        set_seed(cfg.seed)
        unet = UNet2DModel(**self.unet_kwargs)
        if cfg.channels_last:
            unet = unet.to(memory_format=torch.channels_last)
        unet.train()
        self.unet = unet
        self.ema = None
        if cfg.use_ema:
            self.ema = EMAModel(
                unet.parameters(),
                decay=cfg.ema_max_decay,
                use_ema_warmup=True,
                inv_gamma=cfg.ema_inv_gamma,
                power=cfg.ema_power,
                foreach=cfg.ema_foreach,
                model_cls=UNet2DModel,
                model_config=unet.config,
            )
        optimizer_kwargs = {}
        if cfg.use_fused_adam:
            optimizer_kwargs["fused"] = True
        else:
            optimizer_kwargs["foreach"] = True
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay,
            eps=cfg.adam_epsilon,
            **optimizer_kwargs,
        )
        self.lr_scheduler = get_scheduler(
            cfg.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=cfg.lr_warmup_steps,
            num_training_steps=self.max_train_steps,
        )
        self.model, self.optimizer = accelerator.prepare(unet, optimizer)
        if self.ema is not None:
            self.ema.to(accelerator.device)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.sampler = create_sampler(cfg.timestep_sampler, cfg.ddpm_num_steps)
        self.counter = _StepCounter()
        accelerator.register_for_checkpointing(self.counter, self.lr_scheduler, self.sampler)
        if self.ema is not None:
            accelerator.register_for_checkpointing(self.ema)

        device = accelerator.device
        self.step_generator = torch.Generator(device=device)
        self.last_checkpoint: Optional[str] = None
        self._pending: List[Tuple[torch.Tensor, torch.Tensor]] = []
        self._last_log_time = time.perf_counter()
        self._last_log_step = 0
        self.last_loss: Optional[float] = None
        self.last_bits_per_dim: Optional[float] = None
        self.is_setup = True
        return self

    def _resolve_resume(self) -> Optional[str]:
        cfg = self.config
        if cfg.resume_from_checkpoint is None:
            found = list_checkpoints(cfg.output_dir)
            if found and not cfg.overwrite_output_dir:
                raise ValueError(
                    f"output_dir {cfg.output_dir!r} already holds checkpoints of a run ({os.path.basename(found[-1][1])});"
                    " continue it with --resume_from_checkpoint latest, or start over with --overwrite_output_dir"
                    " (deletes its checkpoints and metrics)"
                )
            return None
        if cfg.resume_from_checkpoint == "latest":
            found = list_checkpoints(cfg.output_dir)
            if not found:
                logger.warning("resume_from_checkpoint='latest': no checkpoint in %s; starting a new run", cfg.output_dir)
                return None
            skipped = []
            for _, path in reversed(found):
                problems = verify_checkpoint(path, CHECKPOINT_MARKER)
                if not problems:
                    for name, why in skipped:
                        logger.warning("resume_from_checkpoint='latest': skipped the damaged %s (%s); resuming from %s",
                                       name, why, os.path.basename(path))
                    return path
                skipped.append((os.path.basename(path), "; ".join(problems)))
            raise ValueError(
                f"resume_from_checkpoint='latest': no checkpoint in {cfg.output_dir!r} verifies: "
                + "; ".join(f"{name}: {why}" for name, why in skipped)
            )
        problems = verify_checkpoint(cfg.resume_from_checkpoint, CHECKPOINT_MARKER)
        if problems and os.path.isfile(os.path.join(cfg.resume_from_checkpoint, CHECKPOINT_MARKER)):
            raise ValueError(
                f"resume_from_checkpoint={cfg.resume_from_checkpoint!r} is damaged: {'; '.join(problems)};"
                " pick another checkpoint-<step> folder or use 'latest' (skips damaged checkpoints)"
            )
        return cfg.resume_from_checkpoint

    def _load_data(self, default_data: bool) -> None:
        cfg = self.config
        with self.accelerator.main_process_first():
            dataset = ddpm_data.load_image_dataset(
                dataset_name=cfg.dataset_name,
                dataset_config_name=cfg.dataset_config_name,
                train_data_dir=cfg.train_data_dir,
                cache_dir=cfg.cache_dir,
                image_column=cfg.image_column,
            )
        self.dataset_label = cfg.dataset_name or (cfg.train_data_dir and os.path.basename(cfg.train_data_dir.rstrip("/")))
        self.dataset_label = self.dataset_label or "scikit-learn digits (8×8, 1,797 images)"
        self.eval_images = None
        if cfg.eval_nll_steps > 0:
            if len(dataset) <= cfg.eval_nll_num_images:
                raise ValueError(
                    f"eval_nll_num_images={cfg.eval_nll_num_images} leaves no training images out of {len(dataset)};"
                    " lower it or set eval_nll_steps=0"
                )
            dataset, held_out = ddpm_data.split_dataset(dataset, test_size=cfg.eval_nll_num_images, seed=0)
            self.eval_images = ddpm_data.pretensorize(held_out, cfg.resolution, self.channels)
        nbytes = len(dataset) * self.channels * cfg.resolution**2
        use_tensor = cfg.pretensorize == "always" or (
            cfg.pretensorize == "auto" and (cfg.center_crop or default_data) and nbytes <= cfg.pretensorize_max_bytes
        )
        self.pretensorized = use_tensor
        if use_tensor:
            self.train_source = _TensorSource(ddpm_data.pretensorize(dataset, cfg.resolution, self.channels))
        else:
            dataset.set_transform(
                ddpm_data.make_transform(cfg.resolution, self.channels, center_crop=cfg.center_crop, random_flip=False)
            )
            self.train_source = _DatasetSource(dataset)

    # ------------------------------------------------------------------ the training step
    def _micro_batches(self, start_micro: int) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
        """(micro-step, indices, pixel values [B, C, H, W] on the CPU) from `start_micro` on."""
        schedule = self.schedule
        if isinstance(self.train_source, _DatasetSource) and self.config.dataloader_num_workers > 0:

            class _Indices:
                def __iter__(inner):
                    m = start_micro
                    while True:
                        yield schedule.indices(m)
                        m += 1

            loader = torch.utils.data.DataLoader(
                self.train_source,
                sampler=_Indices(),
                batch_size=None,
                num_workers=self.config.dataloader_num_workers,
                pin_memory=self.accelerator.device.type == "cuda",
                generator=torch.Generator().manual_seed(derive_seed(self.config.seed, _SEED_DATA, start_micro)),
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
                yield m, indices, self.train_source[indices]
                m += 1

    def _draw(self, micro_step: int, shape: Tuple[int, ...]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """This process's slice of the global batch's timesteps, weights, noise and flips for `micro_step`."""
        device = self.accelerator.device
        g = self.step_generator.manual_seed(derive_seed(self.config.seed, _SEED_STEP, micro_step))
        global_b = self.schedule.global_batch_size
        lo = self.accelerator.process_index * self.config.train_batch_size
        hi = lo + self.config.train_batch_size
        timesteps, weights = self.sampler.sample(global_b, device, generator=g)
        noise = torch.randn((global_b, *shape), generator=g, device=device)
        flips = torch.rand(global_b, generator=g, device=device)[lo:hi] < 0.5 if self.config.random_flip else None
        return timesteps[lo:hi], weights[lo:hi], noise[lo:hi], flips

    def _micro_step(self, micro_step: int, pixel_values: torch.Tensor, sync: bool) -> torch.Tensor:
        cfg = self.config
        accelerator = self.accelerator
        x0 = pixel_values.to(accelerator.device, non_blocking=True)
        timesteps, weights, noise, flips = self._draw(micro_step, tuple(x0.shape[1:]))
        if flips is not None:
            x0 = torch.where(flips.view(-1, 1, 1, 1), x0.flip(-1), x0)
        if cfg.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)
        context = contextlib.nullcontext() if sync else accelerator.no_sync(self.model)
        with context:
            model_output = self.model(noisy, timesteps).sample
            losses = training_losses(
                self.noise_scheduler,
                model_output.float(),
                x0,
                noise,
                timesteps,
                loss_type=cfg.loss_type,
                snr_gamma=cfg.snr_gamma,
                vlb_weight=cfg.vlb_weight,
            )
            per_sample = losses["loss"]
            loss = (per_sample * weights).mean()
            accelerator.backward(loss / cfg.gradient_accumulation_steps)
        if cfg.timestep_sampler == "importance":
            self.sampler.update_with_local_losses(
                accelerator.gather(timesteps), accelerator.gather(per_sample.detach().float())
            )
        return loss.detach()

    def _optimizer_step(self, batches: Iterator[Tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        cfg = self.config
        loss_sum = None
        for k in range(cfg.gradient_accumulation_steps):
            micro_step, indices, pixel_values = next(batches)
            if cfg.log_batch_indices:
                self._log_indices(micro_step, indices)
            loss = self._micro_step(micro_step, pixel_values, sync=k == cfg.gradient_accumulation_steps - 1)
            loss_sum = loss if loss_sum is None else loss_sum + loss
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        self.counter.global_step += 1
        grad_norm = grad_norm if isinstance(grad_norm, torch.Tensor) else torch.tensor(float(grad_norm))
        self._pending.append((loss_sum / cfg.gradient_accumulation_steps, grad_norm.detach().float()))

    def train_steps(self, num_steps: int) -> None:
        """Run `num_steps` optimizer steps from the current step, logging to `metrics.jsonl` every `logging_steps`
        steps, without checkpoints, trackers' setup, samples or evaluation (benchmarks, notebooks)."""
        if not self.is_setup:
            self.setup()
        os.makedirs(self.config.output_dir, exist_ok=True)
        start = self.counter.global_step
        batches = self._micro_batches(start * self.config.gradient_accumulation_steps)
        for _ in range(num_steps):
            self._optimizer_step(batches)
            if self.counter.global_step % self.config.logging_steps == 0:
                self._flush_logs(None)

    def _log_indices(self, micro_step: int, indices: torch.Tensor) -> None:
        folder = os.path.join(self.config.output_dir, "debug")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"batch_indices_rank{self.accelerator.process_index}.jsonl")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"micro_step": micro_step, "indices": indices.tolist()}) + "\n")

    # ------------------------------------------------------------------ logging
    def _flush_logs(self, progress) -> None:
        """One gather for the pending steps: write metrics.jsonl, trackers and the progress bar."""
        if not self._pending:
            return
        accelerator = self.accelerator
        stacked = torch.stack([torch.stack([loss.float(), norm.to(loss.device)]) for loss, norm in self._pending])
        gathered = accelerator.gather(stacked.unsqueeze(0)).float().cpu()
        values = gathered.mean(dim=0)  # [steps, 2]: losses averaged over processes; grad norms are equal
        num = len(self._pending)
        self._pending.clear()
        step = self.counter.global_step
        # on values already on the host; with fp16 loss scaling an infinite gradient norm is a skipped step (the
        # scaler lowers its scale), not divergence, so only the loss counts there
        checked = gathered[..., :1] if accelerator.scaler is not None else gathered
        finite = torch.isfinite(checked).all(dim=0).all(dim=-1)  # [steps]
        if not bool(finite.all()):
            first = step - num + 1 + int((~finite).nonzero()[0])
            raise TrainingDivergedError(
                f"training diverged: the loss or the gradient norm is not finite at step {first} (loss"
                f" {float(values[first - step + num - 1, 0])}, gradient norm {float(values[first - step + num - 1, 1])});"
                f" nothing from this point was saved; {self._last_good()}."
                " Lower --learning_rate or --max_grad_norm, and resume with --resume_from_checkpoint latest"
            )
        now = time.perf_counter()
        images = (step - self._last_log_step) * self.schedule.global_batch_size * self.config.gradient_accumulation_steps
        images_per_sec = images / max(now - self._last_log_time, 1e-9)
        self._last_log_time, self._last_log_step = now, step
        lr = self.lr_scheduler.get_last_lr()[0]
        self.last_loss = float(values[:, 0].mean())
        if accelerator.is_main_process:
            with open(os.path.join(self.config.output_dir, METRICS_FILE), "a", encoding="utf-8") as fh:
                for i in range(num):
                    row = {"step": step - num + 1 + i, "loss": float(values[i, 0]), "grad_norm": float(values[i, 1])}
                    fh.write(json.dumps(row) + "\n")
                fh.write(json.dumps({"step": step, "lr": lr, "images_per_sec": images_per_sec}) + "\n")
            if progress is not None:
                progress.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{images_per_sec:.0f}")
        accelerator.log(
            {"loss": self.last_loss, "lr": lr, "grad_norm": float(values[:, 1].mean()), "images_per_sec": images_per_sec},
            step=step,
        )

    def _truncate_metrics(self, step: int) -> None:
        path = os.path.join(self.config.output_dir, METRICS_FILE)
        if not self.accelerator.is_main_process or not os.path.isfile(path):
            return
        rows = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = _parse_metrics_line(line)
                if row is not None and row.get("step", 0) <= step:
                    rows.append(json.dumps(row) + "\n")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(rows)

    # ------------------------------------------------------------------ checkpoints
    def _check_finite_weights(self, what: str) -> None:
        """Refuse to save non-finite weights (one host sync per save)."""
        tensors = list(self.unet.parameters())
        if self.ema is not None:
            tensors += list(self.ema.shadow_params)
        ok = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
        if not bool(ok):
            raise TrainingDivergedError(
                f"training diverged: the weights are not finite at step {self.counter.global_step}; the {what} was not"
                f" saved; {self._last_good()}. Lower --learning_rate or"
                " --max_grad_norm, and resume with --resume_from_checkpoint latest"
            )

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "this run wrote no checkpoint"
        return f"the last good checkpoint is {self.last_checkpoint}"

    def _state_bytes(self) -> int:
        """About the bytes a checkpoint takes: weights, optimizer state, EMA (for the disk-full message)."""
        total = sum(p.numel() * p.element_size() for p in self.unet.parameters())
        for state in self.optimizer.state_dict()["state"].values():
            total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
        if self.ema is not None:
            total += sum(p.numel() * p.element_size() for p in self.ema.shadow_params)
        return total + 2**20

    def save_checkpoint(self) -> str:
        """Save a resumable checkpoint `checkpoint-<step>` atomically (write aside, then rename); prune old ones."""
        accelerator = self.accelerator
        cfg = self.config
        step = self.counter.global_step
        final = os.path.join(cfg.output_dir, f"{CHECKPOINT_PREFIX}{step}")
        tmp = os.path.join(cfg.output_dir, f".tmp-{CHECKPOINT_PREFIX}{step}")
        self._check_finite_weights("checkpoint")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(tmp)
        except (OSError, RuntimeError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(err, cfg.output_dir, self._state_bytes()):
                raise disk_full_error(err, tmp, self._state_bytes()) from err
            raise
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = dict(self.fingerprint, global_step=step, num_processes=accelerator.num_processes,
                         train_batch_size=cfg.train_batch_size, config=cfg.to_dict())
            try:
                fsync_tree(tmp)
                state["files"] = file_manifest(tmp, CHECKPOINT_MARKER)
                with open(os.path.join(tmp, CHECKPOINT_MARKER), "w", encoding="utf-8") as fh:
                    json.dump(_normalize(state), fh, indent=2)
                    fh.flush()
                    os.fsync(fh.fileno())
                fsync_dir(tmp)
            except OSError as err:
                shutil.rmtree(tmp, ignore_errors=True)
                if is_disk_full(err, cfg.output_dir, self._state_bytes()):
                    raise disk_full_error(err, tmp, self._state_bytes()) from err
                raise
            if os.path.exists(final):
                old = os.path.join(cfg.output_dir, f".old-{CHECKPOINT_PREFIX}{step}")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            fsync_dir(cfg.output_dir)
            if cfg.checkpoints_total_limit is not None:
                for _, path in list_checkpoints(cfg.output_dir)[: -cfg.checkpoints_total_limit]:
                    shutil.rmtree(path, ignore_errors=True)
            logger.info("saved checkpoint %s", final)
        accelerator.wait_for_everyone()
        self.last_checkpoint = final
        return final

    def load_checkpoint(self, path: str) -> None:
        """Restore model, optimizer, EMA, LR schedule, sampler, RNG states and the step from `path`."""
        saved = check_checkpoint_compatible(path, self.fingerprint)
        for line in exactness_differences(saved, self.config.to_dict(), self.accelerator.num_processes):
            logger.warning("resuming with a different %s; the resumed run is not bit-identical to an uninterrupted"
                           " one", line)
        self.accelerator.load_state(path)
        self.last_checkpoint = path
        self._last_log_step = self.counter.global_step
        logger.info("resumed from %s at step %d", path, self.counter.global_step)

    # ------------------------------------------------------------------ EMA, evaluation, samples
    @contextlib.contextmanager
    def ema_weights(self):
        """Temporarily put the EMA weights into the UNet (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.unet.parameters())
        self.ema.copy_to(self.unet.parameters())
        try:
            yield
        finally:
            self.ema.restore(self.unet.parameters())

    def _pipeline(self) -> DDPMExtPipeline:
        pipe = DDPMExtPipeline(unet=self.accelerator.unwrap_model(self.unet), scheduler=self.noise_scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def evaluate_bits_per_dim(self) -> float:
        """Mean bits/dim of the held-out images with the EMA weights (sharded over processes)."""
        accelerator = self.accelerator
        n = self.eval_images.shape[0]
        mine = list(range(accelerator.process_index, n, accelerator.num_processes))
        results: List[Tuple[int, float]] = []
        if mine:
            device = accelerator.device
            generators = [torch.Generator(device=device).manual_seed(derive_seed(self.config.seed, _SEED_EVAL, i))
                          for i in mine]
            self.unet.eval()
            with self.ema_weights():
                bpd = self._pipeline().bits_per_dim(
                    self.eval_images[mine].to(device),
                    generator=generators,
                    timestep_batch_size=self.config.eval_nll_timestep_batch_size,
                    batch_size=self.config.eval_batch_size,
                )
            self.unet.train()
            results = list(zip(mine, bpd.float().cpu().tolist()))
        everything = gather_object(results) if accelerator.num_processes > 1 else results
        value = float(np.mean([v for _, v in everything]))
        self.last_bits_per_dim = value
        step = self.counter.global_step
        if accelerator.is_main_process:
            with open(os.path.join(self.config.output_dir, METRICS_FILE), "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "bits_per_dim": value}) + "\n")
        accelerator.log({"bits_per_dim": value}, step=step)
        return value

    def save_samples(self) -> Optional[str]:
        """A sample grid with the EMA weights (main process): `samples/step_<step>.png` and `sample_grid.png`."""
        if not self.accelerator.is_main_process:
            return None
        from PIL import Image

        cfg = self.config
        device = self.accelerator.device
        self.unet.eval()
        with self.ema_weights():
            images = self._pipeline()(
                batch_size=cfg.eval_batch_size,
                generator=torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, _SEED_SAMPLES)),
                num_inference_steps=cfg.ddpm_num_inference_steps,
                output_type="np",
            ).images
        self.unet.train()
        grid = image_grid(images)
        folder = os.path.join(cfg.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step_{self.counter.global_step:07d}.png")
        Image.fromarray(grid).save(path)
        shutil.copyfile(path, os.path.join(cfg.output_dir, SAMPLE_GRID))
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_image("samples", grid if grid.ndim == 3 else grid[..., None],
                                         self.counter.global_step, dataformats="HWC")
        return path

    def save_pipeline(self) -> None:
        """Save the self-contained `DDPMExtPipeline` (EMA weights) into `output_dir` (main process)."""
        self._check_finite_weights("pipeline")
        if not self.accelerator.is_main_process:
            return
        out = self.config.output_dir
        tmp = os.path.join(out, ".tmp-pipeline")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with self.ema_weights():
                self._pipeline().save_pretrained(tmp)
            fsync_tree(tmp)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            size = sum(p.numel() * p.element_size() for p in self.unet.parameters()) + 2**20
            if is_disk_full(err, out, size):
                raise disk_full_error(err, tmp, size) from err
            raise
        _swap_in(tmp, out, os.path.join(out, ".old-pipeline"))

    # ------------------------------------------------------------------ the run
    def fit(self) -> TrainingResult:
        """Train to `max_train_steps` (or until SIGTERM / SIGINT), then save the pipeline, card, samples and plot."""
        if not self.is_setup:
            self.setup()
        cfg = self.config
        accelerator = self.accelerator
        os.makedirs(cfg.output_dir, exist_ok=True)
        if self.resume_path is not None:
            self.load_checkpoint(self.resume_path)
            self._truncate_metrics(self.counter.global_step)
        elif accelerator.is_main_process:
            old = [name for name in os.listdir(cfg.output_dir)
                   if name.startswith((CHECKPOINT_PREFIX, f".tmp-{CHECKPOINT_PREFIX}", f".old-{CHECKPOINT_PREFIX}"))]
            if old:  # only with --overwrite_output_dir (setup refuses otherwise)
                logger.warning("overwrite_output_dir: deleting the previous run's %s in %s", ", ".join(sorted(old)),
                               cfg.output_dir)
                for name in old:
                    shutil.rmtree(os.path.join(cfg.output_dir, name), ignore_errors=True)
            metrics = os.path.join(cfg.output_dir, METRICS_FILE)
            if os.path.exists(metrics):
                os.remove(metrics)
        accelerator.wait_for_everyone()
        if cfg.logger != "none":
            accelerator.init_trackers("train_ddpm", config=_tracker_config(cfg.to_dict()))
        accum = cfg.gradient_accumulation_steps
        start = self.counter.global_step
        logger.info(
            "training %d steps (%d → %d), %d processes × batch %d × accumulation %d, %s data, mixed precision %s",
            self.max_train_steps - start, start, self.max_train_steps, accelerator.num_processes,
            cfg.train_batch_size, accum, "pre-decoded" if self.pretensorized else "PIL-decoded", self.mixed_precision,
        )
        progress = tqdm(total=self.max_train_steps, initial=start, disable=not accelerator.is_local_main_process,
                        desc="train", dynamic_ncols=True)
        batches = self._micro_batches(start * accum)
        multi = accelerator.num_processes > 1
        self._last_log_time = time.perf_counter()
        with _SignalFlag() as flag, ParentWatch():
            result = self._train_loop(flag, progress, batches, multi)
        if result.hub_url is None and cfg.push_to_hub and accelerator.is_main_process and result.interrupted_by is None:
            from ..hub import HubPushError, push_output_dir

            repo_id = cfg.hub_model_id or os.path.basename(os.path.abspath(cfg.output_dir))
            try:
                result.hub_url = push_output_dir(cfg.output_dir, repo_id, token=cfg.hub_token,
                                                 private=cfg.hub_private_repo)
                logger.info("pushed to %s", result.hub_url)
            except HubPushError as err:
                result.push_error = str(err)
                logger.error("%s", err)
        return result

    def _train_loop(self, flag: "_SignalFlag", progress, batches, multi: bool) -> TrainingResult:
        """The steps, the final checkpoint and the end-of-run outputs, all under the signal handlers."""
        cfg = self.config
        accelerator = self.accelerator
        accum = cfg.gradient_accumulation_steps
        micro_per_epoch = self.schedule.micro_steps_per_epoch
        interrupted = None
        while self.counter.global_step < self.max_train_steps:
            epoch_before = (self.counter.global_step * accum) // micro_per_epoch
            self._optimizer_step(batches)
            step = self.counter.global_step
            progress.update(1)
            epoch_after = (step * accum) // micro_per_epoch
            done = step >= self.max_train_steps
            if step % cfg.logging_steps == 0 or done:
                self._flush_logs(progress)
            if cfg.eval_nll_steps and step % cfg.eval_nll_steps == 0 and not done:
                self._flush_logs(progress)
                self.evaluate_bits_per_dim()
            if epoch_after > epoch_before and not done:
                if epoch_after % cfg.save_images_epochs == 0:
                    self.save_samples()
                if epoch_after % cfg.save_model_epochs == 0:
                    self.save_pipeline()
            if step % cfg.checkpointing_steps == 0 and not done:
                self._flush_logs(progress)
                self.save_checkpoint()
            if not multi:
                signum = flag.signum
            elif step % cfg.logging_steps == 0 or done:
                seen = torch.tensor([flag.signum or 0], device=accelerator.device)
                signum = int(accelerator.gather(seen).max()) or None
            else:
                signum = None
            if signum and not done:
                interrupted = signum
                break
        self._flush_logs(progress)
        progress.close()
        if self.last_checkpoint is None or not self.last_checkpoint.endswith(
            f"{CHECKPOINT_PREFIX}{self.counter.global_step}"
        ):
            self.save_checkpoint()
        if cfg.log_batch_indices:
            folder = os.path.join(cfg.output_dir, "debug")
            os.makedirs(folder, exist_ok=True)
            params = {name: p.detach().cpu().clone() for name, p in self.unet.named_parameters()}
            torch.save(params, os.path.join(folder, f"params_rank{accelerator.process_index}.pt"))
        result = TrainingResult(
            output_dir=cfg.output_dir, global_step=self.counter.global_step, interrupted_by=interrupted,
            checkpoint=self.last_checkpoint, final_loss=self.last_loss,
        )
        if interrupted is not None:
            logger.warning("stopped by %s at step %d; resume with --resume_from_checkpoint latest",
                           signal.Signals(interrupted).name, self.counter.global_step)
            accelerator.end_training()
            return result
        if cfg.eval_nll_steps:
            self.evaluate_bits_per_dim()
        result.final_bits_per_dim = self.last_bits_per_dim
        self.save_pipeline()
        self.save_samples()
        if accelerator.is_main_process:
            plot_training_curves(os.path.join(cfg.output_dir, METRICS_FILE), os.path.join(cfg.output_dir, CURVES_PLOT))
            write_model_card(cfg, result, self.dataset_label, self.unet)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        if flag.signum is not None:  # a signal during the final saves: they completed; stop before publishing
            logger.warning("received %s while saving the finished run; the outputs are complete, not pushing",
                           signal.Signals(flag.signum).name)
            result.interrupted_by = flag.signum
        return result


def _swap_in(src: str, dest: str, old: str) -> None:
    """Move every entry of the complete folder `src` into `dest` by renames (`model_index.json` last, so a loader
    never sees the new index with the old components); replaced entries go through `old`, removed at the end."""
    shutil.rmtree(old, ignore_errors=True)
    os.makedirs(old)
    names = sorted(os.listdir(src), key=lambda n: n == "model_index.json")
    for name in names:
        target = os.path.join(dest, name)
        if os.path.lexists(target):
            os.replace(target, os.path.join(old, name))
        os.replace(os.path.join(src, name), target)
    fsync_dir(dest)
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def train(config: TrainingConfig) -> TrainingResult:
    """
    Run a whole training job (see [`DDPMTrainer`]).

    Args:
        config ([`TrainingConfig`]): the options.

    Returns:
        [`TrainingResult`]: the step reached, whether a signal stopped it, the last checkpoint and metrics.
    """
    return DDPMTrainer(config).setup().fit()


# ---------------------------------------------------------------------- outputs
def _tracker_config(values: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


__all__ = [
    "DDPMTrainer",
    "DiskFullError",
    "TrainingDivergedError",
    "TrainingResult",
    "check_checkpoint_compatible",
    "derive_seed",
    "list_checkpoints",
    "plot_training_curves",
    "read_metrics",
    "train",
    "write_model_card",
]
