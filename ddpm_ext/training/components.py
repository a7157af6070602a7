# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""The pieces `DDPMTrainer.setup()` assembles, each from the options alone: the accelerator, the data, the model
with its EMA, the optimizer with its LR schedule. Every input error surfaces here, before any training."""

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from .. import data as ddpm_data
from .batches import DatasetSource, TensorSource
from .config import TrainingConfig

logger = logging.getLogger("ddpm_ext.training.loop")  # the run's messages come from one logger


def resolve_mixed_precision(cfg: TrainingConfig) -> str:
    """`cfg.mixed_precision` (or accelerate's environment); fp16 on the CPU falls back to fp32 with a warning."""
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
    return mixed_precision


def make_accelerator(cfg: TrainingConfig, mixed_precision: str, trackers: list) -> Accelerator:
    """The `Accelerator` logging to `trackers` (TF32 switched on where asked and available)."""
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    project = ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, cfg.logging_dir))
    return Accelerator(mixed_precision=mixed_precision, log_with=trackers or None, project_config=project)


def check_destinations(cfg: TrainingConfig, accelerator: Accelerator) -> None:
    """The tracker is installed and the Hub repo is writable: fail now, not at the end of the run."""
    if cfg.logger == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError("logger='wandb' needs `pip install wandb`; allowed loggers: tensorboard, wandb, none")
    if cfg.push_to_hub and accelerator.is_main_process:
        from ..hub import check_push_access

        repo_id = cfg.hub_model_id or os.path.basename(os.path.abspath(cfg.output_dir))
        check_push_access(repo_id, token=cfg.hub_token, private=cfg.hub_private_repo)


@dataclass
class TrainingData:
    """The training images, the held-out images for bits/dim (or None) and how to name the data set; with
    `class_conditional`, the class id of every training row (indexed like `train_source`) and held-out image, and
    the class names (id k is `class_names[k]`)."""

    train_source: object
    eval_images: Optional[torch.Tensor]
    label: str
    pretensorized: bool
    train_labels: Optional[torch.Tensor] = None
    eval_labels: Optional[torch.Tensor] = None
    class_names: Optional[List[str]] = None


def load_training_data(cfg: TrainingConfig, accelerator: Accelerator, channels: int, default_data: bool) -> TrainingData:
    """Load the data set, split off the held-out images (seed 0), and pre-decode the training images into one
    uint8 tensor when `pretensorize` allows (else decode PIL images per batch). With `class_conditional`, read the
    label column of the whole data set first (class ids do not depend on the split) and split it like the images."""
    with accelerator.main_process_first():
        dataset = ddpm_data.load_image_dataset(
            dataset_name=cfg.dataset_name,
            dataset_config_name=cfg.dataset_config_name,
            train_data_dir=cfg.train_data_dir,
            cache_dir=cfg.cache_dir,
            image_column=cfg.image_column,
        )
    label = cfg.dataset_name or (cfg.train_data_dir and os.path.basename(cfg.train_data_dir.rstrip("/")))
    label = label or "scikit-learn digits (8×8, 1,797 images)"
    train_labels = eval_labels = class_names = None
    if cfg.class_conditional:
        train_labels, class_names = ddpm_data.read_class_labels(dataset, cfg.label_column or "label")
    eval_images = None
    if cfg.eval_nll_steps > 0:
        if len(dataset) <= cfg.eval_nll_num_images:
            raise ValueError(
                f"eval_nll_num_images={cfg.eval_nll_num_images} leaves no training images out of {len(dataset)};"
                " lower it or set eval_nll_steps=0"
            )
        if train_labels is not None:  # the rows split_dataset keeps, in the same (data set) order
            train_idx, test_idx = ddpm_data.split_indices(len(dataset), cfg.eval_nll_num_images, seed=0)
            train_labels, eval_labels = train_labels[train_idx], train_labels[test_idx]
        dataset, held_out = ddpm_data.split_dataset(dataset, test_size=cfg.eval_nll_num_images, seed=0)
        eval_images = ddpm_data.pretensorize(held_out, cfg.resolution, channels)
    nbytes = len(dataset) * channels * cfg.resolution**2
    use_tensor = cfg.pretensorize == "always" or (
        cfg.pretensorize == "auto" and (cfg.center_crop or default_data) and nbytes <= cfg.pretensorize_max_bytes
    )
    if use_tensor:
        source = TensorSource(ddpm_data.pretensorize(dataset, cfg.resolution, channels))
    else:
        dataset.set_transform(
            ddpm_data.make_transform(cfg.resolution, channels, center_crop=cfg.center_crop, random_flip=False)
        )
        source = DatasetSource(dataset)
    return TrainingData(source, eval_images, label, use_tensor, train_labels, eval_labels, class_names)


def build_model(cfg: TrainingConfig, unet_kwargs: dict) -> Tuple[UNet2DModel, Optional[EMAModel]]:
    """The UNet (initialised from `cfg.seed`) in training mode, and its EMA when `use_ema`."""
    set_seed(cfg.seed)
    unet = UNet2DModel(**unet_kwargs)
    if cfg.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    unet.train()
    ema = None
    if cfg.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=cfg.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=cfg.ema_inv_gamma,
            power=cfg.ema_power,
            foreach=cfg.ema_foreach,
            model_cls=UNet2DModel,
            model_config=unet.config,
        )
    return unet, ema


def build_optimizer(cfg: TrainingConfig, unet: UNet2DModel, max_train_steps: int):
    """AdamW (fused or foreach) and diffusers' LR schedule over `max_train_steps`."""
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
        **({"fused": True} if cfg.use_fused_adam else {"foreach": True}),
    )
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer=optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=max_train_steps
    )
    return optimizer, lr_scheduler
