# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Training losses of DDPM and Improved-DDPM: L_simple, the variational bound term L_vlb, and their hybrid.

Every function returns one value per sample ([B]) so that a training loop can apply importance weights
(`ddpm_ext.resample`) before averaging. The bound's terms themselves are `DDPMExtScheduler` methods; this module
only combines them.

Scales (the same as IDDPM's `gaussian_diffusion.py`): L_vlb terms are in bits per dimension, as
`DDPMExtScheduler.vb_terms_bpd` returns them. The full bound is L_vlb = Σ_t L_t, and a uniformly drawn t gives the
unbiased single-sample estimate T · L_t; `"vlb"` trains on that, and `"hybrid"` adds λ · T · L_t to L_simple (with
λ = 0.001 this is IDDPM's `vb * num_timesteps / 1000`).
"""

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

from .schedulers.scheduling_ddpm_ext import LEARNED_VARIANCE_TYPES, DDPMExtScheduler

LOSS_TYPES = ("simple", "hybrid", "vlb")


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def prediction_target(
    scheduler: DDPMExtScheduler, x_0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """
    The regression target of the scheduler's `prediction_type`: ε (`epsilon`), x_0 (`sample`) or
    v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (`v_prediction`).

    Args:
        scheduler ([`DDPMExtScheduler`]): gives `prediction_type` and ᾱ_t.
        x_0 (`torch.Tensor`): clean samples [B, C, ...].
        noise (`torch.Tensor`): the ε used to diffuse `x_0`, same shape.
        timesteps (`torch.LongTensor`): [B] timestep indices.

    Returns:
        `torch.Tensor`: the target, shaped like `x_0`.
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x_0
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x_0, noise, timesteps)
    raise ValueError(
        f"prediction_type={prediction_type!r} is not supported; allowed values: epsilon, sample, v_prediction"
    )


def min_snr_loss_weights(scheduler: DDPMExtScheduler, timesteps: torch.Tensor, snr_gamma: float) -> torch.Tensor:
    """
    Min-SNR-γ loss weights (Hang et al. 2023) for the scheduler's `prediction_type`, expressed on the MSE of that
    prediction: min(SNR, γ)/SNR for ε, min(SNR, γ) for x_0, min(SNR, γ)/(SNR + 1) for v, with SNR = ᾱ_t/(1-ᾱ_t).
    At SNR = 0 (a zero-terminal-SNR schedule's last step) the ε weight takes its limit, 1.

    Args:
        scheduler ([`DDPMExtScheduler`]): gives `prediction_type` and ᾱ_t.
        timesteps (`torch.LongTensor`): [B] timestep indices.
        snr_gamma (`float`): γ > 0 (the paper recommends 5).

    Returns:
        `torch.Tensor`: [B] float32 weights.
    """
    if isinstance(snr_gamma, bool) or not isinstance(snr_gamma, (int, float)) or not snr_gamma > 0:
        raise ValueError(f"snr_gamma must be a number > 0 (or None to disable min-SNR weighting), got {snr_gamma!r}")
    snr = compute_snr(scheduler, timesteps)
    clipped = snr.clamp(max=float(snr_gamma))
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
    if prediction_type == "sample":
        return clipped
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise ValueError(
        f"prediction_type={prediction_type!r} is not supported; allowed values: epsilon, sample, v_prediction"
    )


def simple_loss(
    scheduler: DDPMExtScheduler,
    prediction: torch.Tensor,
    x_0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    snr_gamma: Optional[float] = None,
) -> torch.Tensor:
    """
    L_simple (DDPM eq. 14) per sample: the MSE between the prediction and the target of the scheduler's
    `prediction_type`, averaged over all non-batch dimensions, optionally min-SNR-γ weighted.

    Args:
        scheduler ([`DDPMExtScheduler`]): gives `prediction_type` and the schedule.
        prediction (`torch.Tensor`): the network's prediction channels only, shaped like `x_0`.
        x_0 (`torch.Tensor`): clean samples [B, C, ...].
        noise (`torch.Tensor`): the ε used to diffuse `x_0`.
        timesteps (`torch.LongTensor`): [B] timestep indices.
        snr_gamma (`float`, *optional*): γ of min-SNR weighting; `None` leaves the MSE unweighted.

    Returns:
        `torch.Tensor`: [B] float32 losses.
    """
    target = prediction_target(scheduler, x_0, noise, timesteps)
    mse = _mean_flat(F.mse_loss(prediction.float(), target.float(), reduction="none"))
    if snr_gamma is not None:
        mse = mse * min_snr_loss_weights(scheduler, timesteps, snr_gamma).to(mse.device)
    return mse


def vlb_term(
    scheduler: DDPMExtScheduler,
    model_output: torch.Tensor,
    x_0: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """
    The bound's term L_t per sample in bits per dimension: KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t)) for t > 0,
    the discretized decoder's -log p_θ(x_0|x_1) at t = 0 (DDPM eq. 5). The predicted x_0 is not clipped, so that
    out-of-range predictions still get gradient (as IDDPM trains).

    Args:
        scheduler ([`DDPMExtScheduler`]): computes the term (`vb_terms_bpd`).
        model_output (`torch.Tensor`): the full network output (with the variance channels for learned types).
        x_0 (`torch.Tensor`): clean samples on the 256-level grid in [-1, 1].
        x_t (`torch.Tensor`): `x_0` diffused to `timesteps`.
        timesteps (`torch.LongTensor`): [B] timestep indices.

    Returns:
        `torch.Tensor`: [B] terms in bits/dim.
    """
    return scheduler.vb_terms_bpd(model_output, x_0, x_t, timesteps, clip_denoised=False)["output"]


def training_losses(
    scheduler: DDPMExtScheduler,
    model_output: torch.Tensor,
    x_0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    loss_type: str = "simple",
    snr_gamma: Optional[float] = None,
    vlb_weight: float = 0.001,
) -> Dict[str, torch.Tensor]:
    """
    Per-sample training losses for a network output at x_t = `scheduler.add_noise(x_0, noise, timesteps)`.

    - `"simple"`: L_simple (DDPM eq. 14), optionally min-SNR-γ weighted.
    - `"hybrid"`: L_simple + λ · T · L_t (IDDPM §3.1), λ = `vlb_weight`. The L_t part sees the prediction
      channels through a stop-gradient, so the prediction learns from L_simple only and the variance channels
      from L_t only. Allowed with a fixed variance type: then L_t carries no gradient and only adds the bound
      estimate to the reported loss.
    - `"vlb"`: T · L_t, the single-timestep estimate of the bound (IDDPM's `rescaled_kl`); both the prediction
      and the variance channels learn from it. `snr_gamma` does not apply.

    With importance-sampled timesteps (`ddpm_ext.resample`), optimize `(losses["loss"] * weights).mean()`, which
    keeps the estimate unbiased.

    Args:
        scheduler ([`DDPMExtScheduler`]): the diffusion (prediction type, variance type, schedule).
        model_output (`torch.Tensor`): the network output [B, C, ...], or [B, 2C, ...] (prediction channels, then
            variance channels) for `variance_type` `learned` / `learned_range`.
        x_0 (`torch.Tensor`): clean samples [B, C, ...]; for `hybrid` / `vlb` on the 256-level grid in [-1, 1].
        noise (`torch.Tensor`): the ε that diffused `x_0`, same shape.
        timesteps (`torch.LongTensor`): [B] timestep indices in [0, num_train_timesteps).
        loss_type (`str`, defaults to `"simple"`): `simple`, `hybrid` or `vlb`.
        snr_gamma (`float`, *optional*): γ of min-SNR weighting of the L_simple part.
        vlb_weight (`float`, defaults to 0.001): λ of the hybrid loss.

    Returns:
        `dict[str, torch.Tensor]`: [B] float32 tensors: `"loss"` (to optimize), `"mse"` (the unweighted L_simple
        part, for `simple` and `hybrid`) and `"vlb"` (L_t in bits/dim, unscaled, for `hybrid` and `vlb`).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not supported; allowed values: {', '.join(LOSS_TYPES)}")
    if loss_type == "vlb" and snr_gamma is not None:
        raise ValueError(f"snr_gamma={snr_gamma!r} applies to the simple / hybrid losses only; use None with 'vlb'")
    if isinstance(vlb_weight, bool) or not isinstance(vlb_weight, (int, float)) or not vlb_weight >= 0:
        raise ValueError(f"vlb_weight must be a number >= 0, got {vlb_weight!r}")
    prediction, variance = _split(scheduler, model_output, x_0, noise, timesteps)
    if loss_type != "simple" and x_0.device.type == "cpu" and x_0.numel() and float(x_0.abs().max()) > 1.0 + 1e-6:
        raise ValueError(
            f"x_0 must lie in [-1, 1] for the {loss_type!r} loss (its decoder term is over the 256-level grid on"
            f" [-1, 1]), got values up to {float(x_0.abs().max()):.4g} in magnitude"
        )

    losses: Dict[str, torch.Tensor] = {}
    if loss_type in ("simple", "hybrid"):
        losses["mse"] = simple_loss(scheduler, prediction, x_0, noise, timesteps)
        if snr_gamma is not None:
            weights = min_snr_loss_weights(scheduler, timesteps, snr_gamma).to(losses["mse"].device)
            losses["loss"] = losses["mse"] * weights
        else:
            losses["loss"] = losses["mse"]
    if loss_type in ("hybrid", "vlb"):
        x_t = scheduler.add_noise(x_0, noise, timesteps)
        if loss_type == "hybrid":
            # IDDPM §3.1: stop-gradient on the mean for L_vlb
            frozen = prediction.detach() if variance is None else torch.cat([prediction.detach(), variance], dim=1)
        else:
            frozen = model_output
        losses["vlb"] = vlb_term(scheduler, frozen, x_0, x_t, timesteps).float()
        scaled = losses["vlb"] * scheduler.config.num_train_timesteps
        losses["loss"] = losses["loss"] + vlb_weight * scaled if loss_type == "hybrid" else scaled
    return losses


def _split(scheduler: DDPMExtScheduler, model_output, x_0, noise, timesteps):
    """Validate shapes; return (prediction channels, variance channels or None)."""
    if x_0.ndim < 2:
        raise ValueError(f"x_0 must be batched as [B, C, ...], got shape {tuple(x_0.shape)}")
    if noise.shape != x_0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x_0 has {tuple(x_0.shape)}; they must be equal")
    batch, channels = x_0.shape[:2]
    if not isinstance(timesteps, torch.Tensor) or timesteps.shape != (batch,):
        shape = tuple(timesteps.shape) if isinstance(timesteps, torch.Tensor) else type(timesteps).__name__
        raise ValueError(f"timesteps must be a tensor of shape ({batch},) (one per sample), got {shape}")
    learned = scheduler.config.variance_type in LEARNED_VARIANCE_TYPES
    expected = 2 * channels if learned else channels
    if model_output.ndim != x_0.ndim or model_output.shape[0] != batch or model_output.shape[2:] != x_0.shape[2:]:
        raise ValueError(
            f"model_output has shape {tuple(model_output.shape)}; expected {(batch, expected, *x_0.shape[2:])}"
            f" for x_0 of shape {tuple(x_0.shape)}"
        )
    if model_output.shape[1] != expected:
        raise ValueError(
            f"model_output has {model_output.shape[1]} channels but variance_type="
            f"{scheduler.config.variance_type!r} needs {expected} for x_0 with {channels} channels"
            + (" (the prediction, then the variance channels)" if learned else "")
        )
    if learned:
        prediction, variance = torch.split(model_output, channels, dim=1)
        return prediction, variance
    return model_output, None
