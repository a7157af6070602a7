# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""All training options as one dataclass, its validation, and the matching command-line flags.

Flag names follow diffusers' `examples/unconditional_image_generation/train_unconditional.py` wherever that script
has the same concept, so its users can switch.
"""

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple, Union, get_args, get_origin

# The vocabularies, as types. Each one is owned elsewhere (the scheduler module, `losses`, `resample`,
# `diffusers.optimization.SchedulerType`, the UNet presets), but those modules import torch; the copies here keep
# `--help` and flag errors instant, and `validate()` (in the training process) checks each copy against its owner
# (`owned_vocabularies()`), as does tests/test_config.py, so they cannot drift.
PredictionType = Literal["epsilon", "sample", "v_prediction"]
VarianceType = Literal["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"]
LossType = Literal["simple", "hybrid", "vlb"]
TimestepSampler = Literal["uniform", "importance"]
LRScheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "piecewise_constant"
]
ModelPreset = Literal["tiny", "ddpm-cifar10"]
MixedPrecision = Literal["no", "fp16", "bf16"]
Logger = Literal["tensorboard", "wandb", "none"]
Pretensorize = Literal["auto", "always", "never"]
Channels = Literal[1, 3]

CLASS_DROPOUT_PROB_DEFAULT = 0.1  # Ho & Salimans 2022 use 0.1-0.2

PREDICTION_TYPES = get_args(PredictionType)
VARIANCE_TYPES = get_args(VarianceType)
BETA_SCHEDULES = get_args(BetaSchedule)
LR_SCHEDULERS = get_args(LRScheduler)
MODEL_PRESETS = get_args(ModelPreset)
MIXED_PRECISION = get_args(MixedPrecision)
LOGGERS = get_args(Logger)
PRETENSORIZE = get_args(Pretensorize)
CHANNELS = get_args(Channels)


def owned_vocabularies() -> Dict[str, Tuple[Any, ...]]:
    """Each option's allowed values as the module that owns the concept defines them (imports torch/diffusers)."""
    from diffusers.optimization import SchedulerType

    from ..losses import LOSS_TYPES
    from ..resample import SAMPLER_NAMES
    from ..schedulers.scheduling_ddpm_ext import BETA_SCHEDULES as SCHEDULER_BETA_SCHEDULES
    from ..schedulers.scheduling_ddpm_ext import PREDICTION_TYPES as SCHEDULER_PREDICTION_TYPES
    from ..schedulers.scheduling_ddpm_ext import VARIANCE_TYPES as SCHEDULER_VARIANCE_TYPES
    from .models import UNET_PRESETS

    return {
        "prediction_type": tuple(SCHEDULER_PREDICTION_TYPES),
        "variance_type": tuple(SCHEDULER_VARIANCE_TYPES),
        "ddpm_beta_schedule": tuple(SCHEDULER_BETA_SCHEDULES),
        "loss_type": tuple(LOSS_TYPES),
        "timestep_sampler": tuple(SAMPLER_NAMES),
        "lr_scheduler": tuple(s.value for s in SchedulerType),
        "model_preset": tuple(UNET_PRESETS),
    }


def _opt(default: Any, help: str, *, minimum: Optional[int] = None, hidden: bool = False) -> Any:
    """One option: its default, its one-line description (the flag's help) and, for integers, the least value."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "hidden": hidden})


@dataclass
class TrainingConfig:
    """
    Every option of a ddpm-ext training run. Field names are the command-line flags (`--<name>`); each field's type
    (with `Literal` choices), default and `metadata["help"]` generate the parser, `--help-training` and the checks
    in `validate()`. `ddpm-ext train --help-training` lists them.
    """

    dataset_name: Optional[str] = _opt(
        None, "a `datasets` name (cached offline); with neither it nor train_data_dir: the embedded 8x8 digits"
    )
    dataset_config_name: Optional[str] = _opt(None, "the data set's configuration")
    train_data_dir: Optional[str] = _opt(None, "a local image folder or parquet file/folder")
    cache_dir: Optional[str] = _opt(None, "`datasets` cache folder")
    image_column: Optional[str] = _opt(None, "the image column (detected when unset)")
    class_conditional: bool = _opt(
        False, "train a class-conditional model on the data set's labels, with classifier-free guidance dropout"
    )
    label_column: Optional[str] = _opt(None, "the column with class labels (needs class_conditional); unset: label")
    class_dropout_prob: float = _opt(
        CLASS_DROPOUT_PROB_DEFAULT,
        "probability a training label is replaced by the null class (classifier-free guidance), in [0, 1)",
    )
    model_config_name_or_path: Optional[str] = _opt(None, "a UNet2DModel config (folder or json) instead of a preset")
    model_preset: ModelPreset = _opt("tiny", "tiny (CPU runs, tests) or ddpm-cifar10 (the DDPM paper's UNet, 35.7M)")
    output_dir: str = _opt("ddpm-ext-model", "pipeline, model card, samples, checkpoints and logs")
    overwrite_output_dir: bool = _opt(
        False, "start a new run in an output_dir holding another run's checkpoints (deletes them and metrics.jsonl)"
    )
    resolution: int = _opt(8, "image height and width", minimum=1)
    channels: Optional[Channels] = _opt(None, "image channels; unset: 1 for the digits, 3 otherwise")
    center_crop: bool = _opt(False, "center crop, else random crop (after resizing the shorter side)")
    random_flip: bool = _opt(False, "random horizontal flips")
    pretensorize: Pretensorize = _opt(
        "auto", "decode the data set once into a uint8 tensor (auto: when it fits and there is no random crop)"
    )
    pretensorize_max_bytes: int = _opt(2**30, "memory cap for --pretensorize auto", minimum=1)
    train_batch_size: int = _opt(16, "images per process per micro-step", minimum=1)
    eval_batch_size: int = _opt(16, "images in a sample grid and per bits/dim batch", minimum=1)
    dataloader_num_workers: int = _opt(0, "workers decoding images when not pretensorized", minimum=0)
    num_epochs: int = _opt(100, "epochs, when max_train_steps is unset", minimum=1)
    max_train_steps: Optional[int] = _opt(None, "optimizer steps in total; overrides num_epochs", minimum=1)
    gradient_accumulation_steps: int = _opt(1, "micro-steps per optimizer step", minimum=1)
    learning_rate: float = _opt(1e-4, "peak AdamW learning rate")
    lr_scheduler: LRScheduler = _opt("cosine", "learning-rate schedule (diffusers.optimization.get_scheduler)")
    lr_warmup_steps: int = _opt(500, "warm-up of the learning-rate schedule, in optimizer steps", minimum=0)
    adam_beta1: float = _opt(0.95, "AdamW beta1, in [0, 1)")
    adam_beta2: float = _opt(0.999, "AdamW beta2, in [0, 1)")
    adam_weight_decay: float = _opt(1e-6, "AdamW weight decay")
    adam_epsilon: float = _opt(1e-8, "AdamW epsilon")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm; 0 disables it")
    use_ema: bool = _opt(False, "keep an EMA of the weights (samples, bits/dim and the saved pipeline use it)")
    ema_inv_gamma: float = _opt(1.0, "EMA warm-up: decay 1 - (1 + step/inv_gamma)^-power")
    ema_power: float = _opt(3 / 4, "EMA warm-up power")
    ema_max_decay: float = _opt(0.9999, "EMA decay cap, in (0, 1)")
    prediction_type: PredictionType = _opt("epsilon", "what the UNet predicts")
    variance_type: VarianceType = _opt(
        "fixed_small", "the reverse process variance; learned/learned_range double the UNet's output channels"
    )
    loss_type: LossType = _opt("simple", "training loss (ddpm_ext.losses); learned variance needs hybrid or vlb")
    vlb_weight: float = _opt(0.001, "lambda of the hybrid loss")
    snr_gamma: Optional[float] = _opt(None, "min-SNR-gamma weighting of the simple loss; none disables it")
    timestep_sampler: TimestepSampler = _opt("uniform", "timestep sampling: uniform or importance (IDDPM eq. 18)")
    ddpm_num_steps: int = _opt(1000, "diffusion steps T", minimum=1)
    ddpm_num_inference_steps: int = _opt(1000, "sampling steps of the sample grids (<= ddpm_num_steps)", minimum=1)
    ddpm_beta_schedule: BetaSchedule = _opt("linear", "the noise schedule")
    eval_nll_steps: int = _opt(0, "held-out bits/dim every this many steps (0: never)", minimum=0)
    eval_nll_num_images: int = _opt(
        64, "size of the held-out split (taken out of training only when eval_nll_steps > 0)", minimum=1
    )
    eval_nll_timestep_batch_size: int = _opt(8, "timesteps per network call in the bits/dim loop", minimum=1)
    mixed_precision: Optional[MixedPrecision] = _opt(None, "unset takes accelerate's config")
    allow_tf32: bool = _opt(False, "TF32 matmuls on Ampere+ GPUs")
    seed: int = _opt(0, "initialisation, data order, noise; a fixed seed makes CPU runs reproducible", minimum=0)
    logger: Logger = _opt("tensorboard", "experiment tracker")
    logging_dir: str = _opt("logs", "tracker folder, under output_dir")
    logging_steps: int = _opt(10, "host syncs for logging happen only every this many steps", minimum=1)
    checkpointing_steps: int = _opt(500, "save a resumable checkpoint every this many steps", minimum=1)
    checkpoints_total_limit: Optional[int] = _opt(None, "keep at most this many checkpoints", minimum=1)
    resume_from_checkpoint: Optional[str] = _opt(None, "latest, or a checkpoint-<step> folder")
    save_images_epochs: int = _opt(10, "sample grids every this many epochs (and at the end)", minimum=1)
    save_model_epochs: int = _opt(10, "pipeline saves every this many epochs (and at the end)", minimum=1)
    push_to_hub: bool = _opt(
        False, "publish the pipeline, model card and sample grid at the end (repo checked before the first step)"
    )
    hub_model_id: Optional[str] = _opt(None, "namespace/name of the Hub repo; unset: output_dir's name")
    hub_token: Optional[str] = _opt(None, "Hub token; unset: the logged-in one")
    hub_private_repo: bool = _opt(False, "create the Hub repo private")
    use_fused_adam: bool = _opt(True, "fused (else foreach) AdamW where torch supports it")
    ema_foreach: bool = _opt(True, "torch._foreach EMA updates")
    channels_last: bool = _opt(False, "channels-last memory format")
    compile: bool = _opt(False, "torch.compile the UNet")
    # debugging only, not a product flag (hidden from --help-training): each process appends the data indices of
    # every micro-step to output_dir/debug/batch_indices_rank<r>.jsonl and saves its final weights there
    log_batch_indices: bool = _opt(False, "debug: record each process's batch indices and final weights", hidden=True)

    def validate(self, check_owners: bool = True) -> "TrainingConfig":
        """Check every option; raise `ValueError` naming the bad value and the allowed ones. Returns `self`.

        `check_owners=False` skips checking the vocabularies against their owning modules (which import torch), for
        a cheap check of the flags before launching the training processes; the `Literal` choices are still checked.
        """
        for f in dataclasses.fields(self):  # what each field's definition says: its choices, its least value
            value = getattr(self, f.name)
            choices = _choices(f.type)
            if choices is not None and value is not None:
                _choice(f.name, value, choices)
            minimum = f.metadata.get("minimum")
            if minimum is not None and (value is not None or not _is_optional(f.type)):
                if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                    raise ValueError(f"{f.name}={value!r} is not allowed; expected an integer >= {minimum}")
        if check_owners:
            for name, allowed in owned_vocabularies().items():
                _choice(name, getattr(self, name), allowed)
        if self.ddpm_num_inference_steps > self.ddpm_num_steps:
            raise ValueError(
                f"ddpm_num_inference_steps={self.ddpm_num_inference_steps} is not allowed; expected at most"
                f" ddpm_num_steps={self.ddpm_num_steps}"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}={value!r} is not allowed; expected a finite number")
        if self.resume_from_checkpoint is not None and self.overwrite_output_dir:
            raise ValueError(
                f"resume_from_checkpoint={self.resume_from_checkpoint!r} and overwrite_output_dir=True contradict each"
                " other; give one of them"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} is not allowed; expected > 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; expected a value in [0, 1)")
        for name in ("adam_weight_decay", "adam_epsilon", "max_grad_norm", "vlb_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; expected >= 0")
        if not 0.0 < self.ema_max_decay < 1.0:
            raise ValueError(f"ema_max_decay={self.ema_max_decay!r} is not allowed; expected a value in (0, 1)")
        if not self.ema_inv_gamma > 0 or not self.ema_power > 0:
            raise ValueError(
                f"ema_inv_gamma={self.ema_inv_gamma!r}, ema_power={self.ema_power!r} are not allowed; both must be > 0"
            )
        if self.snr_gamma is not None:
            if not self.snr_gamma > 0:
                raise ValueError(f"snr_gamma={self.snr_gamma!r} is not allowed; expected > 0 or unset")
            if self.loss_type == "vlb":
                raise ValueError(
                    f"snr_gamma={self.snr_gamma!r} is not allowed with loss_type='vlb'; it weights the simple loss"
                    " (loss_type 'simple' or 'hybrid')"
                )
        if self.loss_type == "simple" and self.variance_type in ("learned", "learned_range"):
            raise ValueError(
                f"variance_type={self.variance_type!r} needs loss_type 'hybrid' or 'vlb' (the simple loss does not"
                f" train the variance channels); got loss_type={self.loss_type!r}"
            )
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(
                f"class_dropout_prob={self.class_dropout_prob!r} is not allowed; expected a value in [0, 1) (0: no"
                " null-class training, so no classifier-free guidance)"
            )
        if not self.class_conditional:
            if self.label_column is not None:
                raise ValueError(
                    f"label_column={self.label_column!r} needs class_conditional=True (--class_conditional); an"
                    " unconditional run reads no labels"
                )
            if self.class_dropout_prob != CLASS_DROPOUT_PROB_DEFAULT:
                raise ValueError(
                    f"class_dropout_prob={self.class_dropout_prob!r} needs class_conditional=True"
                    " (--class_conditional); an unconditional run drops no labels"
                )
        if self.label_column is not None and not self.label_column:
            raise ValueError("label_column='' is not allowed; expected a column name or unset (label)")
        if self.dataset_name is not None and self.train_data_dir is not None:
            raise ValueError(
                f"give one of dataset_name={self.dataset_name!r} or train_data_dir={self.train_data_dir!r}, not both"
            )
        if not self.output_dir:
            raise ValueError("output_dir must be a non-empty path")
        _check_output_dir(self.output_dir)
        if self.push_to_hub:  # the syntax now; the Hub itself is reached in DDPMTrainer.setup, before training
            from ..hub import check_repo_id

            if self.hub_model_id is not None:
                check_repo_id(self.hub_model_id, "hub_model_id")
            else:
                name = os.path.basename(os.path.abspath(self.output_dir))
                check_repo_id(name, "hub_model_id (unset, so output_dir's name)")
        if self.resume_from_checkpoint is not None and self.resume_from_checkpoint != "latest":
            if not os.path.isdir(self.resume_from_checkpoint):
                raise ValueError(
                    f"resume_from_checkpoint={self.resume_from_checkpoint!r} is not a folder; allowed: 'latest' or"
                    " the path of a checkpoint-<step> folder"
                )
        return self

    def to_dict(self) -> Dict[str, Any]:
        """The options as a plain dict, with `hub_token` hidden."""
        values = dataclasses.asdict(self)
        if values.get("hub_token"):
            values["hub_token"] = "***"
        return values

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainingConfig":
        """Build from parsed flags (`add_training_args`); unknown attributes are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) is Union and type(None) in get_args(tp)


def _choices(tp: Any) -> Optional[Tuple[Any, ...]]:
    """The `Literal` values of a field's type (also inside `Optional`), or None."""
    if _is_optional(tp):
        (tp,) = [a for a in get_args(tp) if a is not type(None)]
    return get_args(tp) if get_origin(tp) is Literal else None


def _choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values: {', '.join(map(str, allowed))}")


def _check_output_dir(path: str) -> None:
    """`output_dir` must be a folder or creatable as one: not a file, not below a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"output_dir={path!r} is an existing file; allowed: an existing folder or a new path")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"output_dir={path!r} lies below the file {parent!r}; allowed: a path under a folder")


def _optional_float(text: str) -> Optional[float]:
    return None if text.lower() in ("none", "") else float(text)


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every `TrainingConfig` option as a `--<name>` flag, generated from the field: its type (`Literal` values
    become `choices`), default and `metadata["help"]` (train_unconditional.py's names where shared)."""
    for f in dataclasses.fields(TrainingConfig):
        flag = f"--{f.name}"
        text = argparse.SUPPRESS if f.metadata.get("hidden") else f.metadata["help"].replace("%", "%%")
        choices = _choices(f.type)
        base = f.type
        if _is_optional(base):
            (base,) = [a for a in get_args(base) if a is not type(None)]
        if base is bool:
            action = parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        elif f.name == "snr_gamma":
            action = parser.add_argument(flag, type=_optional_float, default=f.default, help=text)
        elif choices is not None:
            action = parser.add_argument(flag, type=type(choices[0]), default=f.default, choices=choices, help=text)
        else:
            action = parser.add_argument(flag, type=base, default=f.default, help=text)
        if action.help is not argparse.SUPPRESS and "%(default)" not in action.help:  # once (3.11's bool adds one)
            action.help += " (default: %(default)s)"
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by launchers; ignored
    return parser


def build_arg_parser() -> argparse.ArgumentParser:
    """The training command line: `python examples/train_ddpm.py --help`."""
    parser = argparse.ArgumentParser(
        description="Train a DDPM / Improved-DDPM UNet with accelerate (ddpm-ext).",
    )
    return add_training_args(parser)


__all__ = ["TrainingConfig", "add_training_args", "build_arg_parser", "owned_vocabularies"]
