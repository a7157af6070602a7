# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""DDPMExtScheduler: the DDPM / Improved-DDPM Gaussian diffusion as a diffusers scheduler.

Self-contained on purpose (torch, numpy and diffusers only): this file is copied into saved pipeline folders and
loaded there as remote code, so it must never import from the rest of ddpm_ext.

Notation (Ho et al. 2020 "DDPM", Nichol & Dhariwal 2021 "IDDPM"): β_t the variance schedule, α_t = 1 - β_t,
ᾱ_t = ∏_{s≤t} α_s. Timestep index ``t`` here is diffusers' 0-based index, so the paper's t = 1 is index 0.
"""

import math
import numbers
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")


@dataclass
class DDPMExtSchedulerOutput(BaseOutput):
    """
    Output of [`DDPMExtScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`): x_{t-1}, the next input of the denoising loop.
        pred_original_sample (`torch.Tensor`): the model's estimate of x_0 (after clipping or thresholding).
    """

    prev_sample: torch.Tensor
    pred_original_sample: Optional[torch.Tensor] = None


class _StepCoefficients(NamedTuple):
    """
    The coefficients of one reverse step t -> prev_t, each named as the schedule table it is an entry of (the
    tables of `_set_tables`, for a respaced chain those of its own β_t = 1 - ᾱ_t/ᾱ_prev, IDDPM §4). Python floats
    computed once in float64 by `_build_step_table`, or 0-d tensors gathered on the sample's device.
    """

    index: int
    prev_t: int
    sqrt_alphas_cumprod: float  # √ᾱ_t
    sqrt_one_minus_alphas_cumprod: float  # √(1-ᾱ_t)
    sqrt_recip_alphas_cumprod: float  # 1/√ᾱ_t
    sqrt_recipm1_alphas_cumprod: float  # √(1/ᾱ_t - 1)
    sqrt_alphas_cumprod_prev: float  # √ᾱ_prev
    posterior_mean_coef1: float  # of x_0 in μ̃_t (DDPM eq. 7)
    posterior_mean_coef2: float  # of x_t in μ̃_t
    posterior_variance: float  # β̃_t (DDPM eq. 7), 0 for the step into x_0
    posterior_log_variance_clipped: float  # log β̃_t; at the step into x_0, log β̃ of the step before it (IDDPM)
    log_betas: float  # log β_t
    large_log_variance: float  # log Σ of fixed_large: log β_t; at the step into x_0, as the clipped log β̃ (IDDPM)
    noise_scale: float = 1.0  # 1 where the step adds noise, 0 for the step into x_0 (zero posterior variance)


class _GatheredCoefficients:
    """The same names as `_StepCoefficients`, for per-sample timesteps `t` [B] of the full training chain: each
    table's entries gathered on first use, shaped [B, 1, ...] to broadcast against `like`."""

    def __init__(self, scheduler: "DDPMExtScheduler", t: torch.Tensor, like: torch.Tensor):
        self._scheduler, self._t, self._like = scheduler, t, like

    def __getattr__(self, name: str) -> torch.Tensor:
        if name.startswith("_") or name not in _StepCoefficients._fields[2:-1]:
            raise AttributeError(name)
        value = self._scheduler._gather(name, self._t, self._like)
        setattr(self, name, value)
        return value


# the float fields of _StepCoefficients, in the column order of the per-timestep table kept on the sample's device
_TABLE_FIELDS = _StepCoefficients._fields[2:]


def _betas_for_alpha_bar(num_steps: int, alpha_bar_fn, max_beta: float = 0.999) -> np.ndarray:
    # IDDPM eq. 17: β_t = min(1 - ᾱ(t/T) / ᾱ((t-1)/T), max_beta)
    t1 = np.arange(num_steps, dtype=np.float64) / num_steps
    t2 = np.arange(1, num_steps + 1, dtype=np.float64) / num_steps
    return np.minimum(1.0 - alpha_bar_fn(t2) / alpha_bar_fn(t1), max_beta)


def _cosine_alpha_bar(t: np.ndarray, s: float = 0.008) -> np.ndarray:
    # IDDPM eq. 17: f(t) = cos²(((t/T) + s)/(1 + s) · π/2); ᾱ_t = f(t)/f(0) (the ratio in eq. 17 cancels f(0))
    return np.cos((t + s) / (1.0 + s) * math.pi / 2) ** 2


def _laplace_alpha_bar(t: np.ndarray) -> np.ndarray:
    # Hang et al. 2024 ("Improved Noise Schedule for Diffusion Training", arXiv:2407.03297): the log-SNR is
    # λ(t) = -F⁻¹(t) for F the Laplace(μ = 0, b = 0.5) distribution, so training time concentrates around SNR = 1.
    # The value returned is √(SNR / (1 + SNR)), as diffusers' `betas_for_alpha_bar(..., "laplace")` defines it (and
    # DDPMScheduler uses it); copysign as there: at t = 0.5 the sign is +1 (np.sign would give 0).
    lmb = -0.5 * np.copysign(1.0, 0.5 - t) * np.log(1 - 2 * np.abs(0.5 - t) + 1e-6)
    snr = np.exp(lmb)
    return np.sqrt(snr / (1 + snr))


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    # Lin et al. 2024, Algorithm 1: shift and scale √ᾱ so that √ᾱ_T = 0 while √ᾱ_1 is kept.
    sqrt_ac = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_ac[0], sqrt_ac[-1]
    sqrt_ac = (sqrt_ac - last) * first / (first - last)
    ac = sqrt_ac**2
    alphas = np.concatenate([ac[:1], ac[1:] / ac[:-1]])
    return 1.0 - alphas


class DDPMExtScheduler(SchedulerMixin, ConfigMixin):
    """
    Denoising diffusion probabilistic model scheduler (DDPM, with the Improved-DDPM refinements).

    A drop-in for diffusers' `DDPMScheduler`: the same config keys, defaults, timesteps and seeded `step` results.
    On top it exposes the diffusion's quantities by their paper names, the posterior q(x_{t-1} | x_t, x_0), the
    model's p(x_{t-1} | x_t) for every prediction and variance type, the terms of the variational bound in bits per
    dimension, and DDIM-style steps through `step(..., eta=...)`.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of diffusion steps used in training.
        beta_start (`float`, defaults to 0.0001): β_1 of the `linear`, `scaled_linear` and `sigmoid` schedules.
        beta_end (`float`, defaults to 0.02): β_T of those schedules.
        beta_schedule (`str`, defaults to `"linear"`): one of `linear` (DDPM), `scaled_linear`,
            `squaredcos_cap_v2` (IDDPM cosine, eq. 17), `sigmoid`, `laplace`.
        trained_betas (`np.ndarray` or `list[float]`, *optional*): explicit betas; overrides the schedule.
        variance_type (`str`, defaults to `"fixed_small"`): Σ_θ of the reverse process: `fixed_small` (β̃_t),
            `fixed_small_log`, `fixed_large` (β_t), `fixed_large_log`, `learned` (the network outputs log Σ) or
            `learned_range` (IDDPM eq. 15: interpolation between log β̃_t and log β_t).
        clip_sample (`bool`, defaults to `True`): clip the predicted x_0 to [-clip_sample_range, clip_sample_range].
        prediction_type (`str`, defaults to `"epsilon"`): what the network predicts: `epsilon`, `sample` (x_0) or
            `v_prediction`.
        thresholding (`bool`, defaults to `False`): dynamic thresholding of the predicted x_0 (Imagen).
        dynamic_thresholding_ratio (`float`, defaults to 0.995): percentile for dynamic thresholding.
        clip_sample_range (`float`, defaults to 1.0): clipping range when `clip_sample`.
        sample_max_value (`float`, defaults to 1.0): upper bound of the dynamic threshold.
        timestep_spacing (`str`, defaults to `"leading"`): `leading`, `trailing` or `linspace` respacing.
        steps_offset (`int`, defaults to 0): offset added to `leading` inference timesteps.
        rescale_betas_zero_snr (`bool`, defaults to `False`): rescale betas to zero terminal SNR (ᾱ_T = 0).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        for key, value in (
            ("clip_sample", clip_sample),
            ("thresholding", thresholding),
            ("rescale_betas_zero_snr", rescale_betas_zero_snr),
        ):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{key}={value!r} is not allowed; expected a bool (True or False)")
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, (int, np.integer)):
            raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        if not 0 < dynamic_thresholding_ratio <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must be in (0, 1], got {dynamic_thresholding_ratio}")
        if sample_max_value <= 0:
            raise ValueError(f"sample_max_value must be > 0, got {sample_max_value}")
        if steps_offset < 0:
            raise ValueError(f"steps_offset must be >= 0, got {steps_offset}")

        betas = _make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            betas = _rescale_zero_terminal_snr(betas)
        self._set_tables(betas)

        self.init_noise_sigma = 1.0
        self.custom_timesteps = False
        self.num_inference_steps = None
        self.variance_type = variance_type
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())
        self._build_step_table(list(range(num_train_timesteps - 1, -1, -1)))

    # ------------------------------------------------------------------ tables
    def _set_tables(self, betas: np.ndarray) -> None:
        """Compute every schedule table once in float64 (IDDPM style) and keep float32 torch copies."""
        T = len(betas)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        # DDPM eq. 7: β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # β̃ is 0 at the first step: clip the log there to β̃ of the second step (IDDPM)
        first = posterior_variance[1] if T > 1 else betas[0]
        posterior_log_variance_clipped = np.log(np.append(first, posterior_variance[1:]))
        # fixed_large: Σ = β_t, with β̃ at the first step so the decoder's scale stays small (IDDPM)
        large_variance = np.append(first, betas[1:])
        with np.errstate(divide="ignore"):
            sqrt_recip_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod)
            sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod - 1.0)
        self._tables64: Dict[str, np.ndarray] = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "log_one_minus_alphas_cumprod": np.log(np.maximum(1.0 - alphas_cumprod, 1e-300)),
            "sqrt_recip_alphas_cumprod": sqrt_recip_alphas_cumprod,
            "sqrt_recipm1_alphas_cumprod": sqrt_recipm1_alphas_cumprod,
            "sqrt_alphas_cumprod_prev": np.sqrt(alphas_cumprod_prev),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance_clipped,
            # DDPM eq. 7: μ̃_t = coef1 · x_0 + coef2 · x_t
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
            "log_betas": np.log(betas),
            "large_variance": large_variance,
            "large_log_variance": np.log(large_variance),
        }
        for name in (
            "betas",
            "alphas",
            "alphas_cumprod",
            "alphas_cumprod_prev",
            "posterior_variance",
            "posterior_log_variance_clipped",
            "posterior_mean_coef1",
            "posterior_mean_coef2",
        ):
            setattr(self, name, torch.from_numpy(self._tables64[name]).to(torch.float32))
        self.one = torch.tensor(1.0)
        self._noise_buffer: Optional[torch.Tensor] = None
        self._device_tables: Dict[Tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (name, torch.device(device), dtype)
        table = self._device_tables.get(key)
        if table is None:
            table = torch.from_numpy(self._tables64[name]).to(device=device, dtype=dtype)
            self._device_tables[key] = table
        return table

    def _gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table entries at integer timesteps `t` [B], shaped [B, 1, 1, ...] to broadcast against `like`."""
        values = self._table(name, like.device, _compute_dtype(like.dtype))[t]
        return values.reshape(t.shape[0], *([1] * (like.ndim - 1)))

    def _build_step_table(self, timesteps: List[int]) -> None:
        """Per-step Python-float coefficients for the (possibly respaced) chain `timesteps` (descending)."""
        ac = self._tables64["alphas_cumprod"]
        table: Dict[int, _StepCoefficients] = {}
        for i, t in enumerate(timesteps):
            prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            a_t = float(ac[t])
            a_prev = float(ac[prev_t]) if prev_t >= 0 else 1.0
            alpha = a_t / a_prev
            beta = 1.0 - alpha  # β of the respaced chain (IDDPM §4)
            if a_t < 1.0:
                # DDPM eq. 7: β̃_t and the posterior mean's coefficients of x_0 and x_t
                posterior_variance = (1.0 - a_prev) / (1.0 - a_t) * beta
                coef1 = math.sqrt(a_prev) * beta / (1.0 - a_t)
                coef2 = math.sqrt(alpha) * (1.0 - a_prev) / (1.0 - a_t)
            else:  # degenerate ᾱ_t = 1 (β = 0): the step is the identity
                posterior_variance, coef1, coef2 = 0.0, 0.0, 1.0
            log_posterior_variance = _log(posterior_variance)
            table[t] = _StepCoefficients(
                index=i,
                prev_t=prev_t,
                sqrt_alphas_cumprod=math.sqrt(a_t),
                sqrt_one_minus_alphas_cumprod=math.sqrt(1.0 - a_t),
                sqrt_recip_alphas_cumprod=math.inf if a_t == 0.0 else 1.0 / math.sqrt(a_t),
                sqrt_recipm1_alphas_cumprod=math.inf if a_t == 0.0 else math.sqrt(1.0 / a_t - 1.0),
                sqrt_alphas_cumprod_prev=math.sqrt(a_prev),
                posterior_mean_coef1=coef1,
                posterior_mean_coef2=coef2,
                posterior_variance=posterior_variance,
                posterior_log_variance_clipped=log_posterior_variance,
                log_betas=_log(beta),
                large_log_variance=_log(beta),
            )
        last = timesteps[-1] if timesteps else None
        if last is not None and table[last].prev_t < 0:
            # β̃ is 0 at the step into x_0: its log is clipped to the step before it (a one-step chain: log β), as
            # the full-chain tables do (IDDPM). The step adds no noise, so these only keep the tables' meaning.
            before = table[timesteps[-2]] if len(timesteps) > 1 else None
            before = before.posterior_log_variance_clipped if before is not None else table[last].log_betas
            table[last] = table[last]._replace(posterior_log_variance_clipped=before, large_log_variance=before)
        self._steps = table
        self._timestep_list = list(timesteps)
        # The same coefficients as a dense [T, fields] table indexed by the training timestep, gathered with a timestep
        # tensor on its device (no host sync). Timesteps off the chain are NaN rows: a NaN result, never another
        # step's coefficients. A -inf log (a degenerate β = 0) is -1e30 there, whose exp is still 0 but whose
        # product with 0 is not NaN.
        dense = np.full((len(self._tables64["betas"]), len(_TABLE_FIELDS)), np.nan)
        for t, c in table.items():
            dense[t] = [-1e30 if math.isinf(v) and v < 0 else v for v in c[2:]]
            if c.prev_t < 0:
                dense[t, _TABLE_FIELDS.index("noise_scale")] = 0.0
        self._tables64["step_coefficients"] = dense
        T = len(dense)
        self._tables64["prev_timesteps"] = np.array([table[t].prev_t if t in table else t - 1 for t in range(T)])
        for key in [k for k in self._device_tables if k[0] in ("step_coefficients", "prev_timesteps")]:
            del self._device_tables[key]

    # ------------------------------------------------------------------ diffusers scheduler API
    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        """DDPM needs no input scaling; returns `sample` unchanged (for interchangeability)."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        timesteps: Optional[List[int]] = None,
    ) -> None:
        """
        Set the (respaced) timesteps of the reverse chain, as `DDPMScheduler.set_timesteps` does.

        Args:
            num_inference_steps (`int`, *optional*): number of sampling steps, 1 ≤ n ≤ num_train_timesteps.
            device (`str` or `torch.device`, *optional*): where `self.timesteps` lives.
            timesteps (`list[int]`, *optional*): custom strictly descending timesteps in [0, num_train_timesteps).
        """
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("pass either num_inference_steps or timesteps, not both")
        if timesteps is not None:
            ts = [_integral_timestep(t) for t in timesteps]
            if len(ts) == 0:
                raise ValueError("timesteps must not be empty")
            if any(b >= a for a, b in zip(ts, ts[1:])):
                raise ValueError(f"custom timesteps must be strictly descending, got {ts}")
            if ts[0] >= T or ts[-1] < 0:
                raise ValueError(f"custom timesteps must lie in [0, {T}), got {ts[0]}..{ts[-1]}")
            arr = np.array(ts, dtype=np.int64)
            self.custom_timesteps = True
            self.num_inference_steps = len(ts)
        else:
            if (
                num_inference_steps is None
                or isinstance(num_inference_steps, bool)
                or not isinstance(num_inference_steps, (int, np.integer))
            ):
                raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {num_inference_steps!r}")
            if not 1 <= num_inference_steps <= T:
                raise ValueError(
                    f"num_inference_steps must be in [1, {T}] (num_train_timesteps), got {num_inference_steps}"
                )
            n = int(num_inference_steps)
            spacing = self.config.timestep_spacing
            # Lin et al. 2024, Table 2
            if spacing == "linspace":
                arr = np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
            elif spacing == "leading":
                step_ratio = T // n
                arr = (np.arange(0, n) * step_ratio).round()[::-1].copy().astype(np.int64)
                arr += self.config.steps_offset
            else:  # trailing
                arr = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
            if arr.max() >= T or arr.min() < 0:
                raise ValueError(
                    f"steps_offset={self.config.steps_offset} with {n} {spacing} steps gives timestep {arr.max()},"
                    f" outside [0, {T})"
                )
            self.custom_timesteps = False
            self.num_inference_steps = n
        self.timesteps = torch.from_numpy(arr).to(device)
        self._build_step_table([int(t) for t in arr])
        if self.timesteps.device.type != "cpu":
            # copied to the device now, so the loop's first step with a device timestep makes no host-to-device copy
            self._table("step_coefficients", self.timesteps.device, torch.float32)

    def previous_timestep(self, timestep: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        """The timestep that follows `timestep` in the current reverse chain (-1 after the last)."""
        if not _reads_on_host(timestep):  # a device tensor: looked up there, without a host sync
            prev = self._table("prev_timesteps", timestep.device, torch.long)
            return torch.index_select(prev, 0, timestep.reshape(1).long()).reshape(())
        t = int(timestep)
        coefs = self._steps.get(t)
        prev = coefs.prev_t if coefs is not None else t - 1
        return torch.tensor(prev) if isinstance(timestep, torch.Tensor) else prev

    def _get_variance(
        self,
        t: Union[int, torch.Tensor],
        predicted_variance: Optional[torch.Tensor] = None,
        variance_type: Optional[str] = None,
    ) -> torch.Tensor:
        """
        The variance term of the step t -> `previous_timestep(t)` exactly as `DDPMScheduler._get_variance` defines it
        (diffusers' own pipelines call it), from the float64 tables: β̃_t clamped at 1e-20 (`fixed_small`), its
        square root (`fixed_small_log`), β_t (`fixed_large`), log β_t (`fixed_large_log`), the model's output
        (`learned`) or IDDPM eq. 15's log-variance (`learned_range`). `step` does not use it.

        Args:
            t (`int` or `torch.Tensor`): the current timestep.
            predicted_variance (`torch.Tensor`, *optional*): the model's variance channels (learned types).
            variance_type (`str`, *optional*): defaults to the config's.

        Returns:
            `torch.Tensor`: a float32 scalar, or a tensor shaped like `predicted_variance` for the learned types.
        """
        variance_type = self.config.variance_type if variance_type is None else variance_type
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        if variance_type in LEARNED_VARIANCE_TYPES and predicted_variance is None:
            raise ValueError(f"variance_type={variance_type!r} needs predicted_variance")
        t = int(t)
        prev_t = int(self.previous_timestep(t))
        ac = self._tables64["alphas_cumprod"]
        a_t, a_prev = ac[t], (ac[prev_t] if prev_t >= 0 else 1.0)
        beta = 1.0 - a_t / a_prev
        variance = max((1.0 - a_prev) / (1.0 - a_t) * beta, 1e-20)  # DDPM eq. 7, clamped as diffusers does
        if variance_type == "learned":
            return predicted_variance
        if variance_type == "learned_range":
            frac = (predicted_variance + 1) / 2  # IDDPM eq. 15
            return frac * math.log(beta) + (1 - frac) * math.log(variance)
        value = {
            "fixed_small": variance,
            "fixed_small_log": math.sqrt(variance),
            "fixed_large": beta,
            "fixed_large_log": math.log(beta),
        }[variance_type]
        return torch.tensor(value, dtype=torch.float32)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def _coefficients(
        self, timestep: Union[int, torch.Tensor], like: torch.Tensor
    ) -> Tuple[Optional[int], _StepCoefficients]:
        """
        The coefficients of the step from `timestep`. A Python int or a CPU tensor gives Python floats and its int
        value; a tensor on an accelerator gives 0-d tensors gathered on `like`'s device from the per-timestep table
        (no host sync) and `None` for the value, which the caller then cannot branch on.
        """
        if isinstance(timestep, torch.Tensor) and timestep.numel() != 1:
            raise ValueError(
                f"step takes one timestep for the whole batch, got a tensor of shape {tuple(timestep.shape)}"
            )
        if not _reads_on_host(timestep):
            if timestep.is_floating_point():
                raise ValueError(f"timestep must be an integer, got dtype {timestep.dtype}")
            table = self._table("step_coefficients", like.device, _compute_dtype(like.dtype))
            row = torch.index_select(table, 0, timestep.reshape(1).to(like.device, torch.long))[0]
            return None, _StepCoefficients(-1, -1, *row.unbind(0))
        t = int(timestep)
        coefs = self._steps.get(t)
        if coefs is None:
            shown = self._timestep_list if len(self._timestep_list) <= 20 else (
                f"{self._timestep_list[:3]} ... {self._timestep_list[-3:]} ({len(self._timestep_list)} steps)"
            )
            raise ValueError(f"timestep {t} is not in the scheduler's current timesteps {shown}")
        return t, coefs

    def _split_model_output(
        self, model_output: torch.Tensor, sample: torch.Tensor, eta: Optional[float]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        channels = sample.shape[1]
        out_channels = model_output.shape[1]
        learned = self.config.variance_type in LEARNED_VARIANCE_TYPES
        if out_channels == 2 * channels and (learned or eta is not None):
            model_output, predicted_variance = torch.split(model_output, channels, dim=1)
            return model_output, predicted_variance
        if out_channels == channels and (not learned or eta is not None):
            return model_output, None
        expected = 2 * channels if learned else channels
        raise ValueError(
            f"model output has {out_channels} channels but variance_type={self.config.variance_type!r} needs"
            f" {expected} for a sample with {channels} channels"
            + (" (the mean, then the variance channels)" if learned else "")
        )

    def _predict_x0(self, model_output: torch.Tensor, sample: torch.Tensor, c: _StepCoefficients) -> torch.Tensor:
        """x̂_0 from the model's output at x_t (before clipping), for `step` and `p_mean_variance` alike; `c` holds
        Python floats, 0-d tensors or per-sample [B, 1, ...] tensors. A fresh tensor unless prediction_type is
        "sample", where it is the model's own output."""
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            # DDPM eq. 15 solved for x_0: x̂_0 = x_t/√ᾱ_t - √(1/ᾱ_t - 1) ε_θ
            return _axpy(
                torch.mul(sample, c.sqrt_recip_alphas_cumprod), model_output, c.sqrt_recipm1_alphas_cumprod, -1.0
            )
        if prediction_type == "sample":
            return model_output
        # Salimans & Ho 2022: v = √ᾱ ε - √(1-ᾱ) x_0  ⇒  x̂_0 = √ᾱ x_t - √(1-ᾱ) v
        return _axpy(torch.mul(sample, c.sqrt_alphas_cumprod), model_output, c.sqrt_one_minus_alphas_cumprod, -1.0)

    def _log_variance(
        self, c: _StepCoefficients, predicted_variance: Optional[torch.Tensor]
    ) -> Union[float, torch.Tensor]:
        """log Σ_θ of the reverse step for the configured variance_type, for `step` and `p_mean_variance` alike."""
        variance_type = self.config.variance_type
        if variance_type == "learned":
            return predicted_variance  # the network outputs log Σ
        if variance_type == "learned_range":
            # IDDPM eq. 15: log Σ = v log β_t + (1 - v) log β̃_t, with v = (output + 1)/2 in [0, 1]
            frac = (predicted_variance + 1.0) * 0.5
            return frac * c.log_betas + (1.0 - frac) * c.posterior_log_variance_clipped
        if variance_type in ("fixed_large", "fixed_large_log"):
            return c.large_log_variance  # DDPM §3.2: σ² = β_t
        return c.posterior_log_variance_clipped  # DDPM §3.2: σ² = β̃_t

    def _process_x0(self, pred_original_sample: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if self.config.thresholding:
            return self._threshold_sample(pred_original_sample)
        if self.config.clip_sample:
            r = self.config.clip_sample_range
            return pred_original_sample.clamp_(-r, r) if inplace else pred_original_sample.clamp(-r, r)
        return pred_original_sample

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Saharia et al. 2022): per sample, s = clamp(quantile(|x|, ratio), 1, max)."""
        dtype = sample.dtype
        flat = sample.reshape(sample.shape[0], -1)
        if dtype not in (torch.float32, torch.float64):
            flat = flat.float()
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = s.clamp(min=1.0, max=self.config.sample_max_value).unsqueeze(1)
        flat = torch.maximum(torch.minimum(flat, s), -s) / s
        return flat.reshape(sample.shape).to(dtype)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        return_dict: bool = True,
        eta: Optional[float] = None,
    ) -> Union[DDPMExtSchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """
        One reverse step: draw x_{t-1} ~ p_θ(x_{t-1} | x_t).

        Args:
            model_output (`torch.Tensor`): the network's output at (x_t, t); with a learned variance type it has
                twice the sample's channels (the prediction, then the variance channels).
            timestep (`int` or `torch.Tensor`): the current timestep t, one of `self.timesteps`.
            sample (`torch.Tensor`): x_t.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): random source; a list gives one
                stream per sample.
            return_dict (`bool`, defaults to `True`): return a [`DDPMExtSchedulerOutput`] instead of a tuple.
            eta (`float`, *optional*): `None` (default) takes the DDPM ancestral step with the configured variance,
                identical to `DDPMScheduler.step`. A number takes a DDIM step (Song et al. 2021, eq. 12) with
                σ_t = η·√β̃_t: η = 0 is deterministic, η = 1 has the ancestral step's distribution.

        Returns:
            [`DDPMExtSchedulerOutput`] or `tuple`: (prev_sample, pred_original_sample).
        """
        if eta is not None:
            _check_eta(eta)
        # 1. the step's coefficients (ᾱ_t, ᾱ_prev, β_t of the possibly respaced chain), from the float64 tables
        t, c = self._coefficients(timestep, sample)
        model_output, predicted_variance = self._split_model_output(model_output, sample, eta)

        # 2. the predicted x_0 from the model's output ("predicted x_0" of DDPM eq. 15)
        # 3. clip or threshold it; in place, except for prediction_type "sample" (x̂_0 is then the model's output)
        fresh = self.config.prediction_type != "sample"
        pred_original_sample = self._process_x0(self._predict_x0(model_output, sample, c), inplace=fresh)

        if eta is not None:  # a DDIM step instead (Song et al. 2021, eq. 12)
            prev_sample = self._ddim_step(model_output, sample, pred_original_sample, c, t, float(eta), generator)
        else:
            # 4. the predicted previous sample, the posterior mean (DDPM eq. 7): μ̃_t = coef1 · x̂_0 + coef2 · x_t
            coef1, coef2 = c.posterior_mean_coef1, c.posterior_mean_coef2
            prev_sample = _axpy(torch.mul(sample, coef2), pred_original_sample, coef1)
            # 5. add noise: x_{t-1} = μ̃_t + σ_t z with σ_t² = Σ_θ (DDPM Algorithm 2). For t > 0 the same draws as
            # DDPMScheduler, so seeded runs match it. The step into x_0 has zero posterior variance and adds none. A
            # device timestep cannot be read without a host sync: then noise is drawn at every step and scaled by
            # the table's noise_scale, 0 at the step into x_0 (one extra draw, at t = 0, the last step of a chain).
            if t is None or t > 0:
                noise = self._draw_noise(model_output, generator)
                if t is None or c.prev_t >= 0:
                    log_variance = self._log_variance(c, predicted_variance)
                    if isinstance(log_variance, torch.Tensor):
                        std = torch.exp(0.5 * log_variance)
                        prev_sample.addcmul_(std * c.noise_scale if t is None else std, noise)
                    else:
                        prev_sample.add_(noise, alpha=math.exp(0.5 * log_variance))

        if not return_dict:
            return prev_sample, pred_original_sample
        return DDPMExtSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _ddim_step(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        pred_original_sample: torch.Tensor,
        c: _StepCoefficients,
        t: Optional[int],
        eta: float,
        generator,
    ) -> torch.Tensor:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        processed = self.config.thresholding or self.config.clip_sample
        if self.config.prediction_type == "epsilon" and not processed:
            pred_epsilon = model_output
        else:
            # ε̂ consistent with the (clipped) x̂_0, so that η = 1 reproduces the posterior mean exactly
            pred_epsilon = _axpy(sample.clone(), pred_original_sample, c.sqrt_alphas_cumprod, -1.0)
            pred_epsilon.div_(c.sqrt_one_minus_alphas_cumprod)
        # Song et al. 2021 eq. 16: σ_t(η) = η √((1-ᾱ_{t-1})/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_{t-1}) = η √β̃_t
        sigma = eta * _sqrt(c.posterior_variance)
        if isinstance(sigma, torch.Tensor):
            direction = (1.0 - c.sqrt_alphas_cumprod_prev**2 - sigma**2).clamp(min=0.0).sqrt()
        else:
            direction = math.sqrt(max(1.0 - c.sqrt_alphas_cumprod_prev**2 - sigma**2, 0.0))
        # Song et al. 2021 eq. 12
        prev_sample = _axpy(torch.mul(pred_original_sample, c.sqrt_alphas_cumprod_prev), pred_epsilon, direction)
        if eta > 0 and (t is None or t > 0):  # σ is 0 at the step into x_0, so a device timestep may draw there
            noise = self._draw_noise(model_output, generator)
            if isinstance(sigma, torch.Tensor):
                prev_sample.addcmul_(sigma, noise)
            elif sigma > 0:
                prev_sample.add_(noise, alpha=sigma)
        return prev_sample

    def _draw_noise(self, like: torch.Tensor, generator) -> torch.Tensor:
        """N(0, I) shaped like `like`, the same numbers as `randn_tensor`; a single generator on the sample's device
        draws into a buffer kept across steps (the noise is consumed at once), so the loop allocates nothing here."""
        if isinstance(generator, list) or (generator is not None and generator.device.type != like.device.type):
            return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        buffer = self._noise_buffer
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._noise_buffer = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        return torch.randn(like.shape, generator=generator, out=buffer)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Union[torch.Tensor, int]
    ) -> torch.Tensor:
        """
        Sample the forward process in closed form: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (DDPM eq. 4).

        Args:
            original_samples (`torch.Tensor`): x_0, shape [B, ...].
            noise (`torch.Tensor`): ε, same shape.
            timesteps (`torch.Tensor` or `int`): t per sample ([B]) or one for all.

        Returns:
            `torch.Tensor`: x_t in the dtype of `original_samples`.
        """
        t = self._timestep_tensor(timesteps, original_samples)
        dtype = original_samples.dtype
        a = self._table("sqrt_alphas_cumprod", original_samples.device, dtype)[t]
        s = self._table("sqrt_one_minus_alphas_cumprod", original_samples.device, dtype)[t]
        shape = (t.shape[0],) + (1,) * (original_samples.ndim - 1)
        return torch.addcmul(a.reshape(shape) * original_samples, s.reshape(shape), noise)

    def get_velocity(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: Union[torch.Tensor, int]
    ) -> torch.Tensor:
        """The v-prediction target v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022)."""
        t = self._timestep_tensor(timesteps, sample)
        dtype = sample.dtype
        a = self._table("sqrt_alphas_cumprod", sample.device, dtype)[t]
        s = self._table("sqrt_one_minus_alphas_cumprod", sample.device, dtype)[t]
        shape = (t.shape[0],) + (1,) * (sample.ndim - 1)
        return a.reshape(shape) * noise - s.reshape(shape) * sample

    def _timestep_tensor(self, timesteps: Union[torch.Tensor, int], like: torch.Tensor) -> torch.Tensor:
        """Timesteps as a LongTensor [B] on `like`'s device, range-checked against [0, T)."""
        if not isinstance(timesteps, torch.Tensor):
            timesteps = torch.tensor(timesteps)
        if timesteps.is_floating_point():
            raise ValueError(f"timesteps must be integers, got dtype {timesteps.dtype}")
        t = timesteps.to(device=like.device, dtype=torch.long).flatten()
        if t.numel() == 1 and like.shape[0] != 1:
            t = t.expand(like.shape[0])
        if t.device.type == "cpu":  # range check costs a host sync elsewhere; CPU only
            T = self.config.num_train_timesteps
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
                raise ValueError(f"timesteps must lie in [0, {T}), got min {int(t.min())}, max {int(t.max())}")
        return t

    # ------------------------------------------------------------------ the papers' distributions
    def q_mean_variance(
        self, x_0: torch.Tensor, t: Union[torch.Tensor, int]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I) (DDPM eq. 4): (mean, variance, log_variance)."""
        t = self._timestep_tensor(t, x_0)
        mean = self._gather("sqrt_alphas_cumprod", t, x_0) * x_0
        variance = (1.0 - self._gather("alphas_cumprod", t, x_0)).expand_as(mean)
        log_variance = self._gather("log_one_minus_alphas_cumprod", t, x_0).expand_as(mean)
        return mean, variance, log_variance

    def q_posterior(
        self, x_0: torch.Tensor, x_t: torch.Tensor, t: Union[torch.Tensor, int]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        The forward process posterior q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (DDPM eq. 6–7).

        Args:
            x_0 (`torch.Tensor`): clean samples [B, ...].
            x_t (`torch.Tensor`): noisy samples at `t`, same shape.
            t (`int` or `torch.LongTensor` [B]): timestep indices.

        Returns:
            `tuple`: (mean, variance, log_variance) with the log-variance clipped at the first step (IDDPM).
        """
        t = self._timestep_tensor(t, x_t)
        mean = self._gather("posterior_mean_coef1", t, x_t) * x_0 + self._gather("posterior_mean_coef2", t, x_t) * x_t
        variance = self._gather("posterior_variance", t, x_t).expand_as(mean)
        log_variance = self._gather("posterior_log_variance_clipped", t, x_t).expand_as(mean)
        return mean, variance, log_variance

    def p_mean_variance(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: Union[torch.Tensor, int],
        clip_denoised: Optional[bool] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        The model's reverse step p_θ(x_{t-1} | x_t) = N(μ_θ, Σ_θ) over the full training chain.

        Args:
            model_output (`torch.Tensor`): the network's output at (x_t, t).
            x_t (`torch.Tensor`): noisy samples [B, C, ...].
            t (`int` or `torch.LongTensor` [B]): timestep indices in [0, num_train_timesteps).
            clip_denoised (`bool`, *optional*): clip x̂_0; defaults to the config (`thresholding`, `clip_sample`).

        Returns:
            `tuple`: (mean, variance, log_variance, pred_original_sample), in float32 for half-precision inputs.
        """
        t = self._timestep_tensor(t, x_t)
        model_output, predicted_variance = self._split_model_output(model_output, x_t, None)
        dtype = _compute_dtype(x_t.dtype)
        x_t = x_t.to(dtype)
        model_output = model_output.to(dtype)
        c = _GatheredCoefficients(self, t, x_t)
        if predicted_variance is not None:
            predicted_variance = predicted_variance.to(dtype)
        log_variance = self._log_variance(c, predicted_variance).expand_as(x_t)
        variance = torch.exp(log_variance)
        pred_original_sample = self._predict_x0(model_output, x_t, c)
        if clip_denoised is None:
            pred_original_sample = self._process_x0(pred_original_sample)
        elif clip_denoised:
            r = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-r, r)
        mean, _, _ = self.q_posterior(pred_original_sample, x_t, t)
        return mean, variance, log_variance, pred_original_sample

    # ------------------------------------------------------------------ the variational bound (DDPM eq. 5)
    @staticmethod
    def normal_kl(
        mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor
    ) -> torch.Tensor:
        """KL(N(mean1, exp(log_var1)) ‖ N(mean2, exp(log_var2))) elementwise, in nats."""
        return 0.5 * (
            -1.0 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2) + (mean1 - mean2) ** 2 * torch.exp(-log_var2)
        )

    @staticmethod
    def discretized_gaussian_log_likelihood(
        x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
    ) -> torch.Tensor:
        """
        log P(x) of the discretized Gaussian decoder (DDPM §3.3): 256 bins of width 2/255 on [-1, 1], the edge
        bins extended to ±∞. Elementwise, in nats; `log_scale` is the log standard deviation.

        Args:
            x (`torch.Tensor`): data on the 256-level grid in [-1, 1].
            mean (`torch.Tensor`): the Gaussian's mean.
            log_scale (`torch.Tensor`): log σ of the Gaussian.
        """
        dtype = torch.promote_types(x.dtype, mean.dtype)
        # float64 inside: a bin's probability is a difference of two CDF values that can be very close
        x, mean, log_scale = x.double(), mean.double(), log_scale.double()
        inv_std = torch.exp(-log_scale)
        upper = (x - mean + 1.0 / 255.0) * inv_std
        lower = (x - mean - 1.0 / 255.0) * inv_std
        log_cdf_upper = torch.special.log_ndtr(upper)
        log_sf_lower = torch.special.log_ndtr(-lower)
        # log(Φ(u) - Φ(l)) without cancellation: use the tail that both ends share
        in_lower_tail = upper < 0
        log_hi = torch.where(in_lower_tail, log_cdf_upper, log_sf_lower)
        log_lo = torch.where(in_lower_tail, torch.special.log_ndtr(lower), torch.special.log_ndtr(-upper))
        log_mid = log_hi + torch.log1p(-torch.exp(log_lo - log_hi).clamp(max=1.0 - 1e-16))
        log_probs = torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))
        return log_probs.to(dtype)

    def prior_bpd(self, x_0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per sample, in bits per dimension."""
        T = self.config.num_train_timesteps
        mean, _, log_variance = self.q_mean_variance(x_0.to(_compute_dtype(x_0.dtype)), T - 1)
        kl = self.normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(mean))
        return _mean_flat(kl) / math.log(2.0)

    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        x_0: torch.Tensor,
        x_t: torch.Tensor,
        t: Union[torch.Tensor, int],
        clip_denoised: Optional[bool] = None,
    ) -> Dict[str, torch.Tensor]:
        """
        One term of the variational bound per sample, in bits per dimension (DDPM eq. 5):
        L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖ p_θ(x_{t-1} | x_t)) for t > 0 and the decoder's
        L_0 = -log p_θ(x_0 | x_1) at t = 0 (diffusers' index; the paper's t = 1).

        Args:
            model_output (`torch.Tensor`): the network's output at (x_t, t).
            x_0 (`torch.Tensor`): the data, on the 256-level grid in [-1, 1].
            x_t (`torch.Tensor`): x_0 diffused to `t`.
            t (`int` or `torch.LongTensor` [B]): timestep indices.
            clip_denoised (`bool`, *optional*): clip x̂_0; defaults to the config.

        Returns:
            `dict`: "output" [B] the term in bits/dim, "pred_original_sample" the model's x̂_0.
        """
        t = self._timestep_tensor(t, x_t)
        x_0 = x_0.to(_compute_dtype(x_t.dtype))
        true_mean, _, true_log_variance = self.q_posterior(x_0, x_t.to(x_0.dtype), t)
        mean, _, log_variance, pred_original_sample = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        kl = _mean_flat(self.normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        if t.device.type == "cpu" and not bool((t == 0).any()):
            output = kl  # no decoder term in this batch (checked on the host only where that is free)
        else:
            decoder_nll = -_mean_flat(
                self.discretized_gaussian_log_likelihood(x_0, mean, 0.5 * log_variance)
            ) / math.log(2.0)
            output = torch.where(t == 0, decoder_nll, kl)
        return {"output": output, "pred_original_sample": pred_original_sample}


def _reads_on_host(timestep) -> bool:
    """Whether the timestep's value can be read without a device-to-host sync (a number or a CPU tensor)."""
    return not isinstance(timestep, torch.Tensor) or timestep.device.type == "cpu"


def _axpy(x: torch.Tensor, y: torch.Tensor, a: Union[float, torch.Tensor], sign: float = 1.0) -> torch.Tensor:
    """x += sign · a · y in place, for a Python float `a` or a 0-d tensor `a` (a gathered coefficient)."""
    if isinstance(a, torch.Tensor):
        return x.addcmul_(a, y, value=sign)
    return x.add_(y, alpha=sign * a)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _sqrt(x: Union[float, torch.Tensor]) -> Union[float, torch.Tensor]:
    return x.sqrt() if isinstance(x, torch.Tensor) else math.sqrt(x)


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _check_eta(eta) -> None:
    # σ_t = η √β̃_t: η in [0, 1] interpolates DDIM (0) and the ancestral variance (1)
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(eta) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be >= 0 and <= 1, got {eta!r}; allowed: a number in [0, 1] or None for DDPM steps")


def _integral_timestep(t) -> int:
    """A custom timestep as an int: integers, or floats / 1-element tensors with an integral value (999.0)."""
    value = t
    if isinstance(t, torch.Tensor) and t.numel() == 1 or isinstance(t, (np.ndarray, np.generic)) and np.size(t) == 1:
        value = t.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(
            f"custom timesteps must be integers, got {t!r}; allowed: integers in [0, num_train_timesteps)"
        )
    return int(value)


def _check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not supported; allowed values: {', '.join(allowed)}")


def _make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas,
) -> np.ndarray:
    """The β schedule in float64, validated to lie in (0, 1)."""
    T = int(num_train_timesteps)
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float64)
        if betas.ndim != 1:
            raise ValueError(
                f"trained_betas has shape {betas.shape}; allowed: a 1-D list of {T} betas, one per timestep"
            )
        if betas.shape[0] != T:
            raise ValueError(
                f"trained_betas has {betas.shape[0]} values but num_train_timesteps={T}; they must be equal"
            )
        source = "trained_betas"
    else:
        _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        if beta_schedule in ("linear", "scaled_linear", "sigmoid"):
            if not 0.0 < beta_start < 1.0 or not 0.0 < beta_end < 1.0:
                raise ValueError(
                    f"beta_start={beta_start} and beta_end={beta_end} must both lie in (0, 1) for the"
                    f" {beta_schedule!r} schedule"
                )
            if beta_end <= beta_start:
                raise ValueError(f"beta_end={beta_end} must be greater than beta_start={beta_start}")
        if beta_schedule == "linear":
            # DDPM §4: β linear from beta_start to beta_end
            betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        elif beta_schedule == "scaled_linear":
            betas = np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
        elif beta_schedule == "squaredcos_cap_v2":
            betas = _betas_for_alpha_bar(T, _cosine_alpha_bar)
        elif beta_schedule == "laplace":
            betas = _betas_for_alpha_bar(T, _laplace_alpha_bar)
        else:  # sigmoid (GeoDiff)
            x = np.linspace(-6.0, 6.0, T, dtype=np.float64)
            betas = 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start
        source = f"beta_schedule={beta_schedule!r}"
    bad = np.flatnonzero(~((betas > 0.0) & (betas < 1.0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{source} gives beta[{i}]={float(betas[i])!r}; every beta must lie in the open interval (0, 1)"
        )
    return betas
