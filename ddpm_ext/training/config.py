# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""All training options as one dataclass, its validation, and the matching command-line flags.

Flag names follow diffusers' `examples/unconditional_image_generation/train_unconditional.py` wherever that script
has the same concept, so its users can switch.
"""

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..losses import LOSS_TYPES
from ..resample import SAMPLER_NAMES

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
MIXED_PRECISION = ("no", "fp16", "bf16")
LOGGERS = ("tensorboard", "wandb", "none")
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "piecewise_constant",
)
MODEL_PRESETS = ("tiny", "ddpm-cifar10")
PRETENSORIZE = ("auto", "always", "never")
CHANNELS = (1, 3)


@dataclass
class TrainingConfig:
    """
    Every option of a ddpm-ext training run. Field names are the command-line flags (`--<name>`).

    Args:
        dataset_name (`str`, *optional*): a `datasets` name (must be cached offline); none and no `train_data_dir`
            trains on the embedded 8×8 scikit-learn digits.
        dataset_config_name (`str`, *optional*): the data set's configuration.
        train_data_dir (`str`, *optional*): a local image folder or parquet file/folder.
        cache_dir (`str`, *optional*): `datasets` cache folder.
        image_column (`str`, *optional*): the image column (detected when unset).
        model_config_name_or_path (`str`, *optional*): a `UNet2DModel` config (folder or json file) instead of a preset.
        model_preset (`str`, defaults to "tiny"): `tiny` (CPU runs, tests) or `ddpm-cifar10` (DDPM paper, 35.7M).
        output_dir (`str`, defaults to "ddpm-ext-model"): pipeline, model card, samples, checkpoints and logs.
        overwrite_output_dir (`bool`, defaults to `False`): start a new run in an `output_dir` that holds another
            run's checkpoints, deleting them and its `metrics.jsonl` (without it such a run is refused).
        resolution (`int`, defaults to 8): image height and width.
        channels (`int`, *optional*): 1 or 3; defaults to 1 for the digits, 3 otherwise.
        center_crop (`bool`, defaults to `False`): center crop, else random crop (after resizing the shorter side).
        random_flip (`bool`, defaults to `False`): random horizontal flips.
        pretensorize (`str`, defaults to "auto"): decode the data set once into a uint8 tensor: `always`, `never`,
            or `auto` (when it fits in `pretensorize_max_bytes` and there is no random crop).
        pretensorize_max_bytes (`int`, defaults to 2**30): memory cap for `auto`.
        train_batch_size (`int`, defaults to 16): images per process per micro-step.
        eval_batch_size (`int`, defaults to 16): images in a sample grid and per bits/dim batch.
        dataloader_num_workers (`int`, defaults to 0): workers decoding images when not pretensorized.
        num_epochs (`int`, defaults to 100): epochs, when `max_train_steps` is unset.
        max_train_steps (`int`, *optional*): optimizer steps in total; overrides `num_epochs`.
        gradient_accumulation_steps (`int`, defaults to 1): micro-steps per optimizer step.
        learning_rate (`float`, defaults to 1e-4), lr_scheduler (`str`, defaults to "cosine"),
        lr_warmup_steps (`int`, defaults to 500): the optimizer schedule (`diffusers.optimization.get_scheduler`),
            counted in optimizer steps.
        adam_beta1 (`float`, defaults to 0.95), adam_beta2 (`float`, defaults to 0.999),
        adam_weight_decay (`float`, defaults to 1e-6), adam_epsilon (`float`, defaults to 1e-8): AdamW.
        max_grad_norm (`float`, defaults to 1.0): gradient clipping; 0 disables it.
        use_ema (`bool`, defaults to `False`): keep an EMA of the weights (diffusers' `EMAModel`, with warm-up);
            samples, bits/dim and the saved pipeline then use it.
        ema_inv_gamma (`float`, defaults to 1.0), ema_power (`float`, defaults to 0.75),
        ema_max_decay (`float`, defaults to 0.9999): the EMA warm-up `1 - (1 + step/inv_gamma)^-power`, capped.
        prediction_type (`str`, defaults to "epsilon"): `epsilon`, `sample` or `v_prediction`.
        variance_type (`str`, defaults to "fixed_small"): the scheduler's Σ; `learned`/`learned_range` double the
            UNet's output channels.
        loss_type (`str`, defaults to "simple"): `simple`, `hybrid` or `vlb` (`ddpm_ext.losses`).
        vlb_weight (`float`, defaults to 0.001): λ of the hybrid loss.
        snr_gamma (`float`, *optional*): min-SNR-γ weighting of the simple loss.
        timestep_sampler (`str`, defaults to "uniform"): `uniform` or `importance` (IDDPM eq. 18).
        ddpm_num_steps (`int`, defaults to 1000), ddpm_num_inference_steps (`int`, defaults to 1000),
        ddpm_beta_schedule (`str`, defaults to "linear"): the diffusion; schedules `linear`, `scaled_linear`,
            `squaredcos_cap_v2`, `sigmoid`.
        eval_nll_steps (`int`, defaults to 0): bits/dim of the held-out split every this many steps (0: never).
        eval_nll_num_images (`int`, defaults to 64): size of the held-out split (taken out of training only when
            `eval_nll_steps > 0`).
        eval_nll_timestep_batch_size (`int`, defaults to 8): timesteps per network call in the bits/dim loop.
        mixed_precision (`str`, *optional*): `no`, `fp16` or `bf16`; unset takes accelerate's config.
        allow_tf32 (`bool`, defaults to `False`): TF32 matmuls on Ampere+ GPUs.
        seed (`int`, defaults to 0): initialisation, data order, noise; a fixed seed makes CPU runs reproducible.
        logger (`str`, defaults to "tensorboard"): `tensorboard`, `wandb` or `none`.
        logging_dir (`str`, defaults to "logs"): under `output_dir`.
        logging_steps (`int`, defaults to 10): host syncs for logging happen only every this many steps.
        checkpointing_steps (`int`, defaults to 500): save a resumable checkpoint every this many steps.
        checkpoints_total_limit (`int`, *optional*): keep at most this many checkpoints.
        resume_from_checkpoint (`str`, *optional*): `latest` or a checkpoint folder.
        save_images_epochs (`int`, defaults to 10), save_model_epochs (`int`, defaults to 10): sample grids and
            pipeline saves every this many epochs (and always at the end).
        push_to_hub (`bool`), hub_model_id (`str`), hub_token (`str`), hub_private_repo (`bool`): publish the saved
            pipeline, model card and sample grid at the end (never checkpoints or logs); the repo id is checked and
            the repo created before the first step, so a bad id, token or endpoint fails at once.
        use_fused_adam (`bool`, defaults to `True`): fused (else foreach) AdamW where torch supports it.
        ema_foreach (`bool`, defaults to `True`): `torch._foreach` EMA updates.
        channels_last (`bool`, defaults to `False`): channels-last memory format.
        compile (`bool`, defaults to `False`): `torch.compile` the UNet.
        log_batch_indices (`bool`, defaults to `False`): debug: each process appends the data indices of every
            micro-step to `output_dir/debug/batch_indices_rank<r>.jsonl` and saves its final weights to
            `output_dir/debug/params_rank<r>.pt`.
    """

    dataset_name: Optional[str] = None
    dataset_config_name: Optional[str] = None
    train_data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    image_column: Optional[str] = None
    model_config_name_or_path: Optional[str] = None
    model_preset: str = "tiny"
    output_dir: str = "ddpm-ext-model"
    overwrite_output_dir: bool = False
    resolution: int = 8
    channels: Optional[int] = None
    center_crop: bool = False
    random_flip: bool = False
    pretensorize: str = "auto"
    pretensorize_max_bytes: int = 2**30
    train_batch_size: int = 16
    eval_batch_size: int = 16
    dataloader_num_workers: int = 0
    num_epochs: int = 100
    max_train_steps: Optional[int] = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 500
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-6
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_ema: bool = False
    ema_inv_gamma: float = 1.0
    ema_power: float = 3 / 4
    ema_max_decay: float = 0.9999
    prediction_type: str = "epsilon"
    variance_type: str = "fixed_small"
    loss_type: str = "simple"
    vlb_weight: float = 0.001
    snr_gamma: Optional[float] = None
    timestep_sampler: str = "uniform"
    ddpm_num_steps: int = 1000
    ddpm_num_inference_steps: int = 1000
    ddpm_beta_schedule: str = "linear"
    eval_nll_steps: int = 0
    eval_nll_num_images: int = 64
    eval_nll_timestep_batch_size: int = 8
    mixed_precision: Optional[str] = None
    allow_tf32: bool = False
    seed: int = 0
    logger: str = "tensorboard"
    logging_dir: str = "logs"
    logging_steps: int = 10
    checkpointing_steps: int = 500
    checkpoints_total_limit: Optional[int] = None
    resume_from_checkpoint: Optional[str] = None
    save_images_epochs: int = 10
    save_model_epochs: int = 10
    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    hub_token: Optional[str] = None
    hub_private_repo: bool = False
    use_fused_adam: bool = True
    ema_foreach: bool = True
    channels_last: bool = False
    compile: bool = False
    log_batch_indices: bool = False

    def validate(self) -> "TrainingConfig":
        """Check every option; raise `ValueError` naming the bad value and the allowed ones. Returns `self`."""
        _choice("model_preset", self.model_preset, MODEL_PRESETS)
        _choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _choice("variance_type", self.variance_type, VARIANCE_TYPES)
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        _choice("timestep_sampler", self.timestep_sampler, SAMPLER_NAMES)
        _choice("ddpm_beta_schedule", self.ddpm_beta_schedule, BETA_SCHEDULES)
        _choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _choice("logger", self.logger, LOGGERS)
        _choice("pretensorize", self.pretensorize, PRETENSORIZE)
        if self.mixed_precision is not None:
            _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.channels is not None:
            _choice("channels", self.channels, CHANNELS)
        for name in (
            "resolution",
            "train_batch_size",
            "eval_batch_size",
            "num_epochs",
            "gradient_accumulation_steps",
            "ddpm_num_steps",
            "ddpm_num_inference_steps",
            "eval_nll_num_images",
            "eval_nll_timestep_batch_size",
            "logging_steps",
            "checkpointing_steps",
            "save_images_epochs",
            "save_model_epochs",
            "pretensorize_max_bytes",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("max_train_steps", "checkpoints_total_limit"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("dataloader_num_workers", "lr_warmup_steps", "eval_nll_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} is not allowed; expected an integer >= 0")
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


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed; expected an integer >= 1")


def _optional_float(text: str) -> Optional[float]:
    return None if text.lower() in ("none", "") else float(text)


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every `TrainingConfig` option as a `--<name>` flag (train_unconditional.py's names where shared)."""
    defaults = TrainingConfig()
    choices: Dict[str, List[Any]] = {
        "model_preset": list(MODEL_PRESETS),
        "prediction_type": list(PREDICTION_TYPES),
        "variance_type": list(VARIANCE_TYPES),
        "loss_type": list(LOSS_TYPES),
        "timestep_sampler": list(SAMPLER_NAMES),
        "ddpm_beta_schedule": list(BETA_SCHEDULES),
        "lr_scheduler": list(LR_SCHEDULERS),
        "logger": list(LOGGERS),
        "mixed_precision": list(MIXED_PRECISION),
        "pretensorize": list(PRETENSORIZE),
        "channels": list(CHANNELS),
    }
    for f in dataclasses.fields(TrainingConfig):
        default = getattr(defaults, f.name)
        flag = f"--{f.name}"
        doc = f"(default: {default})"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=doc)
            continue
        if f.name == "snr_gamma":
            parser.add_argument(flag, type=_optional_float, default=default, help=doc)
            continue
        kind = {int: int, float: float, Optional[int]: int, Optional[float]: float}.get(f.type, str)
        parser.add_argument(flag, type=kind, default=default, choices=choices.get(f.name), help=doc)
    parser.add_argument("--local_rank", type=int, default=-1, help="ignored; set by launchers")
    return parser


def build_arg_parser() -> argparse.ArgumentParser:
    """The training command line: `python examples/train_ddpm.py --help`."""
    parser = argparse.ArgumentParser(
        description="Train a DDPM / Improved-DDPM UNet with accelerate (ddpm-ext).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return add_training_args(parser)


__all__ = ["TrainingConfig", "add_training_args", "build_arg_parser"]
