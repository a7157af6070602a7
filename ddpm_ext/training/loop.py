# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""The training loop: the step, `setup()` and `fit()` (accelerate: DDP, mixed precision; EMA; exact resume).

Where the rest lives: `batches.py` (which rows each process trains on, seeded data order), `checkpoints.py` (atomic
checkpoints, resume, compatibility, durable files, launcher plumbing), `signals.py` (SIGTERM / SIGINT → checkpoint
and stop), `samples.py` (the sample grid and the held-out bits/dim).

Decisions:

- Randomness is a function of (seed, position), not of a running RNG (see `batches.py`): micro-step `m` draws its
  timesteps, noise and flips from a generator seeded by (seed, m), so resuming at step `s` needs only `s`.
- Global torch / numpy / python RNG states (dropout, random crops) are saved and restored by
  `accelerator.save_state` / `load_state`; with random crops, exact resume needs `dataloader_num_workers=0`.
- Checkpoints (see `checkpoints.py`): written aside, fsynced, marked with `ddpm_ext_training.json` (each file's size
  and sha256), then renamed into place; `latest` resumes from the newest checkpoint whose checksums verify. A new run
  into a folder with checkpoints is refused unless `overwrite_output_dir`. The end-of-run pipeline goes to
  `.tmp-pipeline`, then is renamed into place. The EMA, the LR schedule, the timestep sampler and the step counter are
  registered with `accelerator.register_for_checkpointing`.
- SIGTERM / SIGINT (see `signals.py`): the run saves a checkpoint at the next step boundary (a multi-process run
  agrees on the flag every `logging_steps` steps) and returns with `interrupted_by` set.
- Class-conditional runs (`class_conditional`): the UNet gets `num_class_embeds = K + 1`, id K being the learned
  null class; each label is replaced by it with probability `class_dropout_prob` (classifier-free guidance, Ho &
  Salimans 2022). That mask comes from micro-step `m`'s generator after its other draws (global batch, then this
  process's slice), so unconditional runs draw exactly what they drew before and resume / 2 processes stay exact.
  The sample grid has one row per class (see `samples.class_grid_labels`); the saved pipeline carries `id2label`.
- Divergence: the loss / gradient-norm values fetched for logging are checked for NaN / inf (no extra host sync),
  and the weights before every save (one sync per save); either raises `TrainingDivergedError`.
- Host syncs: per-step losses and gradient norms stay on the device and are fetched every `logging_steps` steps
  (one gather), then written to `output_dir/metrics.jsonl` one line per step.
"""

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from ..losses import training_losses
from ..pipelines.pipeline_ddpm_ext import DDPMExtPipeline
from ..reporting import image_grid, plot_training_curves, read_metrics, write_model_card
from ..resample import create_sampler
from ..schedulers.scheduling_ddpm_ext import DDPMExtScheduler
from .batches import SEED_STEP, BatchSchedule, derive_seed, micro_batches
from .checkpoints import (
    CHECKPOINT_PREFIX,
    DiskFullError,
    ParentWatch,
    StepCounter,
    TrainingDivergedError,
    check_checkpoint_compatible,
    disk_full_error,
    exactness_differences,
    fsync_tree,
    is_disk_full,
    list_checkpoints,
    remove_previous_run,
    resolve_resume,
    swap_in,
    write_checkpoint,
)
from .components import (
    build_model,
    build_optimizer,
    check_destinations,
    load_training_data,
    make_accelerator,
    resolve_mixed_precision,
)
from .config import TrainingConfig
from .models import unet_config
from .samples import class_grid_labels, held_out_bits_per_dim, sample_images
from .signals import SignalFlag
from .tracking import METRICS_FILE, MetricsFile, StepTimer, tracker_config

logger = logging.getLogger(__name__)

CURVES_PLOT = "training_curves.png"


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
        """Check the inputs and build everything a run needs (see `components.py`); every input error is raised
        here, before training."""
        cfg = self.config
        default_data = cfg.dataset_name is None and cfg.train_data_dir is None
        self._describe_model(default_data)
        self.resume_path = self._resolve_resume()
        if self.resume_path is not None and not cfg.class_conditional:  # conditional: once the classes are known
            self.resume_state = check_checkpoint_compatible(self.resume_path, self.fingerprint)
        self.mixed_precision = resolve_mixed_precision(cfg)
        self.metrics = MetricsFile(cfg.output_dir)  # metrics.jsonl and sample grids, always on
        trackers = [self.metrics] + ([] if cfg.logger == "none" else [cfg.logger])
        self.accelerator = make_accelerator(cfg, self.mixed_precision, trackers)
        check_destinations(cfg, self.accelerator)
        data = load_training_data(cfg, self.accelerator, self.channels, default_data)
        self.train_source, self.eval_images = data.train_source, data.eval_images
        self.dataset_label, self.pretensorized = data.label, data.pretensorized
        self.train_labels, self.eval_labels, self.class_names = data.train_labels, data.eval_labels, data.class_names
        if cfg.class_conditional:
            self._describe_model(default_data, data.class_names)
            if self.resume_path is not None:
                self.resume_state = check_checkpoint_compatible(self.resume_path, self.fingerprint)
        self._plan_steps()
        self._build_model_and_optimizer()
        self._register_state()
        return self

    def _describe_model(self, default_data: bool, class_names: Optional[List[str]] = None) -> None:
        """The UNet's config, the noise scheduler and the fingerprint a checkpoint must match to be resumed (with
        `class_names`: a class-conditional UNet, and the names are part of the fingerprint)."""
        cfg = self.config
        self.channels = cfg.channels or (1 if default_data else 3)
        self.unet_kwargs = unet_config(
            cfg.model_preset, cfg.resolution, self.channels, cfg.variance_type, cfg.model_config_name_or_path,
            num_classes=None if class_names is None else len(class_names),
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
        if class_names is not None:
            self.fingerprint["class_names"] = list(class_names)

    def _resolve_resume(self) -> Optional[str]:
        cfg = self.config
        return resolve_resume(cfg.output_dir, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)

    def _plan_steps(self) -> None:
        """The batch schedule and the number of optimizer steps (`max_train_steps` or `num_epochs` worth)."""
        cfg = self.config
        accelerator = self.accelerator
        num_train = len(self.train_source)
        self.schedule = BatchSchedule(
            num_train, cfg.train_batch_size, accelerator.num_processes, accelerator.process_index, cfg.seed
        )
        if self.schedule.micro_steps_per_epoch < 1:
            raise ValueError(
                f"the training split has {num_train} images, fewer than one global batch of train_batch_size"
                f" {cfg.train_batch_size} × {accelerator.num_processes} processes; lower train_batch_size"
            )
        steps_per_epoch = self.schedule.micro_steps_per_epoch / cfg.gradient_accumulation_steps
        self.max_train_steps = cfg.max_train_steps or math.ceil(cfg.num_epochs * steps_per_epoch)

    def _build_model_and_optimizer(self) -> None:
        """The UNet, its EMA, AdamW and the LR schedule, prepared by accelerate; the timestep sampler."""
        cfg = self.config
        self.unet, self.ema = build_model(cfg, self.unet_kwargs)
        optimizer, self.lr_scheduler = build_optimizer(cfg, self.unet, self.max_train_steps)
        self.model, self.optimizer = self.accelerator.prepare(self.unet, optimizer)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.sampler = create_sampler(cfg.timestep_sampler, cfg.ddpm_num_steps)

    def _register_state(self) -> None:
        """What a checkpoint saves besides model and optimizer, and the run's bookkeeping."""
        accelerator = self.accelerator
        self.counter = StepCounter()
        accelerator.register_for_checkpointing(self.counter, self.lr_scheduler, self.sampler)
        if self.ema is not None:
            accelerator.register_for_checkpointing(self.ema)
        self.step_generator = torch.Generator(device=accelerator.device)
        self.last_checkpoint: Optional[str] = None
        self._pending: List[Tuple[torch.Tensor, torch.Tensor]] = []
        self._last_log_time = time.perf_counter()
        self._last_log_step = 0
        self.last_loss: Optional[float] = None
        self.last_bits_per_dim: Optional[float] = None
        self._trackers_started = False
        self.is_setup = True

    # ------------------------------------------------------------------ the training step
    def _micro_batches(self, start_micro: int) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
        """(micro-step, indices, pixel values [B, C, H, W] on the CPU) from `start_micro` on."""
        return micro_batches(
            self.schedule, self.train_source, start_micro, self.config.seed,
            num_workers=self.config.dataloader_num_workers, pin_memory=self.accelerator.device.type == "cuda",
        )
    def _draw(self, micro_step: int, shape: Tuple[int, ...]) -> Tuple[torch.Tensor, ...]:
        """This process's slice of the global batch's timesteps, weights, noise, flips and (class-conditional) null
        class mask for `micro_step`; the mask is drawn last, so unconditional runs draw what they always drew."""
        device = self.accelerator.device
        g = self.step_generator.manual_seed(derive_seed(self.config.seed, SEED_STEP, micro_step))
        global_b = self.schedule.global_batch_size
        lo = self.accelerator.process_index * self.config.train_batch_size
        hi = lo + self.config.train_batch_size
        timesteps, weights = self.sampler.sample(global_b, device, generator=g)
        noise = torch.randn((global_b, *shape), generator=g, device=device)
        flips = torch.rand(global_b, generator=g, device=device)[lo:hi] < 0.5 if self.config.random_flip else None
        drop = None
        if self.config.class_conditional:
            drop = torch.rand(global_b, generator=g, device=device)[lo:hi] < self.config.class_dropout_prob
        return timesteps[lo:hi], weights[lo:hi], noise[lo:hi], flips, drop

    def _labels(self, indices: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """The class ids of the rows `indices`, with the null class (id K) where `drop` is set."""
        labels = self.train_labels[indices].to(self.accelerator.device, non_blocking=True)
        return torch.where(drop, torch.full_like(labels, len(self.class_names)), labels)

    def _micro_step(self, micro_step: int, pixel_values: torch.Tensor, sync: bool,
                    indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg = self.config
        accelerator = self.accelerator
        x0 = pixel_values.to(accelerator.device, non_blocking=True)
        timesteps, weights, noise, flips, drop = self._draw(micro_step, tuple(x0.shape[1:]))
        labels = self._labels(indices, drop) if cfg.class_conditional else None
        if flips is not None:
            x0 = torch.where(flips.view(-1, 1, 1, 1), x0.flip(-1), x0)
        if cfg.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)
        context = contextlib.nullcontext() if sync else accelerator.no_sync(self.model)
        with context:
            if labels is None:
                model_output = self.model(noisy, timesteps).sample
            else:
                model_output = self.model(noisy, timesteps, class_labels=labels).sample
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
            loss = self._micro_step(micro_step, pixel_values, sync=k == cfg.gradient_accumulation_steps - 1,
                                    indices=indices)
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
        self._start_trackers()
        for i in range(num):  # every step's own values (metrics.jsonl: one line per step)
            accelerator.log({"loss": float(values[i, 0]), "grad_norm": float(values[i, 1])}, step=step - num + 1 + i)
        accelerator.log({"lr": lr, "images_per_sec": images_per_sec}, step=step)
        if progress is not None and accelerator.is_main_process:
            progress.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{images_per_sec:.0f}")

    def _start_trackers(self) -> None:
        """Start the trackers once (metrics.jsonl always; tensorboard / wandb with `--logger`)."""
        if not self._trackers_started:
            self.accelerator.init_trackers("train_ddpm", config=tracker_config(self.config.to_dict()))
            self._trackers_started = True

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
        cfg = self.config
        step = self.counter.global_step
        self._check_finite_weights("checkpoint")
        state = dict(self.fingerprint, global_step=step, num_processes=self.accelerator.num_processes,
                     train_batch_size=cfg.train_batch_size, config=cfg.to_dict())
        self.last_checkpoint = write_checkpoint(
            self.accelerator, cfg.output_dir, step, state, cfg.checkpoints_total_limit, self._state_bytes
        )
        return self.last_checkpoint

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

    @contextlib.contextmanager
    def _evaluating(self):
        """The UNet in eval mode with the EMA weights, back to training afterwards."""
        self.unet.eval()
        with self.ema_weights():
            yield
        self.unet.train()

    def _pipeline(self, progress: Optional[str] = None) -> DDPMExtPipeline:
        """The pipeline over the training UNet; `progress` names a progress bar shown on the local main process."""
        extra = {} if self.class_names is None else {"id2label": self.id2label}
        pipe = DDPMExtPipeline(unet=self.accelerator.unwrap_model(self.unet), scheduler=self.noise_scheduler, **extra)
        show = progress is not None and self.accelerator.is_local_main_process
        pipe.set_progress_bar_config(disable=not show, desc=progress, leave=False, dynamic_ncols=True)
        return pipe

    @property
    def id2label(self) -> Optional[dict]:
        """{str(id): name} of a class-conditional run (what the saved pipeline carries), else None."""
        return None if self.class_names is None else {str(i): name for i, name in enumerate(self.class_names)}

    def evaluate_bits_per_dim(self) -> float:
        """Mean bits/dim of the held-out images with the EMA weights (sharded over processes)."""
        cfg = self.config
        with self._evaluating():
            value = held_out_bits_per_dim(self._pipeline("held-out bits/dim"), self.eval_images, self.accelerator,
                                          cfg.seed, cfg.eval_nll_timestep_batch_size, cfg.eval_batch_size,
                                          class_labels=self.eval_labels)
        self.last_bits_per_dim = value
        step = self.counter.global_step
        self._start_trackers()
        self.accelerator.log({"bits_per_dim": value}, step=step)
        if self.accelerator.is_main_process:
            tqdm.write(f"step {step}: held-out bits/dim {value:.4f} ({self.eval_images.shape[0]} images,"
                       f" {'EMA' if self.ema is not None else 'current'} weights)")
        return value

    def save_samples(self) -> Optional[str]:
        """A sample grid with the EMA weights (main process), through every tracker's `log_images`: metrics.jsonl's
        tracker writes `samples/step_<step>.png` and `sample_grid.png`."""
        if not self.accelerator.is_main_process:
            return None
        cfg = self.config
        labels, columns, count = None, None, cfg.eval_batch_size
        if self.class_names is not None:  # one row per class, sampled at the pipeline's default guidance
            labels, columns = class_grid_labels(len(self.class_names), cfg.eval_batch_size)
            count = len(labels)
        with self._evaluating():
            images = sample_images(self._pipeline("sample grid"), count, cfg.seed, cfg.ddpm_num_inference_steps,
                                   self.accelerator.device, class_labels=labels)
        grid = image_grid(images, columns=columns)
        batch = (grid if grid.ndim == 3 else grid[..., None])[None]  # one image, [1, H, W, C]
        step = self.counter.global_step
        self._start_trackers()
        for tracker in self.accelerator.trackers:
            tracker.log_images({"samples": batch}, step, **({"dataformats": "NHWC"} if tracker.name == "tensorboard"
                                                             else {}))
        return os.path.join(cfg.output_dir, "samples", f"step_{step:07d}.png")

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
        swap_in(tmp, out, os.path.join(out, ".old-pipeline"))

    # ------------------------------------------------------------------ the run
    def fit(self) -> TrainingResult:
        """Train to `max_train_steps` (or until SIGTERM / SIGINT), then save the pipeline, card, samples and plot."""
        if not self.is_setup:
            self.setup()
        self._prepare_output_dir()
        self._start_trackers()
        start = self.counter.global_step
        self._announce(start)
        progress = tqdm(total=self.max_train_steps, initial=start, disable=not self.accelerator.is_local_main_process,
                        desc="train", dynamic_ncols=True)
        batches = self._micro_batches(start * self.config.gradient_accumulation_steps)
        self._last_log_time = time.perf_counter()
        with SignalFlag() as flag, ParentWatch():
            result = self._train_loop(flag, progress, batches, self.accelerator.num_processes > 1)
        if result.hub_url is None and result.interrupted_by is None:
            self._push(result)
        return result

    def _prepare_output_dir(self) -> None:
        """Resume from the checkpoint (metrics past it dropped), or clear a previous run's checkpoints and metrics."""
        cfg = self.config
        accelerator = self.accelerator
        os.makedirs(cfg.output_dir, exist_ok=True)
        if self.resume_path is not None:
            self.load_checkpoint(self.resume_path)
            if accelerator.is_main_process:
                self.metrics.truncate(self.counter.global_step)
        elif accelerator.is_main_process:
            old = remove_previous_run(cfg.output_dir)
            if old:  # only with --overwrite_output_dir (setup refuses otherwise)
                logger.warning("overwrite_output_dir: deleted the previous run's %s in %s", ", ".join(old),
                               cfg.output_dir)
            self.metrics.reset()
        accelerator.wait_for_everyone()

    def _announce(self, start: int) -> None:
        """Print the step count (the time estimate follows after the first few steps, see `StepTimer`)."""
        cfg = self.config
        if self.accelerator.is_main_process:  # on stderr, with the progress bars
            tqdm.write(
                f"training {self.max_train_steps - start:,} steps ({start:,} → {self.max_train_steps:,}),"
                f" {self.accelerator.num_processes} process(es) × batch {cfg.train_batch_size} × accumulation"
                f" {cfg.gradient_accumulation_steps}, {'pre-decoded' if self.pretensorized else 'PIL-decoded'} data,"
                f" mixed precision {self.mixed_precision}",
                file=sys.stderr,
            )
        sync = torch.cuda.synchronize if self.accelerator.device.type == "cuda" else None
        self._timer = StepTimer(start, self.max_train_steps, sync=sync)

    def _push(self, result: TrainingResult) -> None:
        """Upload the finished run (`--push_to_hub`, main process); a failure is recorded, the folder stays."""
        cfg = self.config
        if not (cfg.push_to_hub and self.accelerator.is_main_process):
            return
        from ..hub import HubPushError, push_output_dir

        repo_id = cfg.hub_model_id or os.path.basename(os.path.abspath(cfg.output_dir))
        try:
            result.hub_url = push_output_dir(cfg.output_dir, repo_id, token=cfg.hub_token, private=cfg.hub_private_repo)
            logger.info("pushed to %s", result.hub_url)
        except HubPushError as err:
            result.push_error = str(err)
            logger.error("%s", err)

    def _train_loop(self, flag: SignalFlag, progress, batches, multi: bool) -> TrainingResult:
        """The steps, the final checkpoint and the end-of-run outputs, all under the signal handlers."""
        interrupted = self._run_steps(flag, progress, batches, multi)
        self._flush_logs(progress)
        progress.close()
        if self.last_checkpoint is None or not self.last_checkpoint.endswith(
            f"{CHECKPOINT_PREFIX}{self.counter.global_step}"
        ):
            self.save_checkpoint()
        if self.config.log_batch_indices:
            self._save_debug_params()
        result = TrainingResult(
            output_dir=self.config.output_dir, global_step=self.counter.global_step, interrupted_by=interrupted,
            checkpoint=self.last_checkpoint, final_loss=self.last_loss,
        )
        if interrupted is not None:
            logger.warning("stopped by %s at step %d; resume with --resume_from_checkpoint latest",
                           signal.Signals(interrupted).name, self.counter.global_step)
            self.accelerator.end_training()
            return result
        self._finish(result)
        if flag.signum is not None:  # a signal during the final saves: they completed; stop before publishing
            logger.warning("received %s while saving the finished run; the outputs are complete, not pushing",
                           signal.Signals(flag.signum).name)
            result.interrupted_by = flag.signum
        return result

    def _run_steps(self, flag: SignalFlag, progress, batches, multi: bool) -> Optional[int]:
        """Optimizer steps with their periodic logs, evaluations, samples and checkpoints, to `max_train_steps` or a
        signal; returns the signal number that stopped the run early, if any."""
        cfg = self.config
        accum = cfg.gradient_accumulation_steps
        micro_per_epoch = self.schedule.micro_steps_per_epoch
        while self.counter.global_step < self.max_train_steps:
            epoch_before = (self.counter.global_step * accum) // micro_per_epoch
            self._optimizer_step(batches)
            step = self.counter.global_step
            progress.update(1)
            estimate = self._timer.after_step(step)
            if estimate and self.accelerator.is_main_process:
                tqdm.write(estimate, file=sys.stderr)
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
            signum = self._agreed_signal(flag, step, done, multi)
            if signum and not done:
                return signum
        return None

    def _agreed_signal(self, flag: SignalFlag, step: int, done: bool, multi: bool) -> Optional[int]:
        """The signal every process agrees to stop on at this step (checked every `logging_steps` when several)."""
        if not multi:
            return flag.signum
        if flag.signum is not None:
            self.accelerator.set_trigger()
        if (step % self.config.logging_steps == 0 or done) and self.accelerator.check_trigger():
            return flag.signum or signal.SIGTERM  # a process that saw no signal itself stops as if terminated
        return None

    def _save_debug_params(self) -> None:
        folder = os.path.join(self.config.output_dir, "debug")
        os.makedirs(folder, exist_ok=True)
        params = {name: p.detach().cpu().clone() for name, p in self.unet.named_parameters()}
        torch.save(params, os.path.join(folder, f"params_rank{self.accelerator.process_index}.pt"))

    def _finish(self, result: TrainingResult) -> None:
        """The end-of-run outputs: held-out bits/dim, the pipeline, a sample grid, the plot and the model card."""
        cfg = self.config
        if cfg.eval_nll_steps:
            self.evaluate_bits_per_dim()
        result.final_bits_per_dim = self.last_bits_per_dim
        self.save_pipeline()
        self.save_samples()
        if self.accelerator.is_main_process:
            plot_training_curves(os.path.join(cfg.output_dir, METRICS_FILE), os.path.join(cfg.output_dir, CURVES_PLOT))
            write_model_card(cfg, result, self.dataset_label, self.unet, id2label=self.id2label)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def train(config: TrainingConfig) -> TrainingResult:
    """
    Run a whole training job (see [`DDPMTrainer`]).

    Args:
        config ([`TrainingConfig`]): the options.

    Returns:
        [`TrainingResult`]: the step reached, whether a signal stopped it, the last checkpoint and metrics.
    """
    return DDPMTrainer(config).setup().fit()


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
