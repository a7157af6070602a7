"""Every scheduler diffusers lists as compatible with DDPMExtScheduler, swapped into a learned-variance pipeline:
it samples the right distribution, or it is refused before sampling with a message naming the ones that work.

The model is an oracle for Gaussian data x_0 ~ N(0, s² I): its ε-prediction is the exact posterior mean
E[ε | x_t] = √(1-ᾱ_t) x_t / (ᾱ_t s² + 1 - ᾱ_t), so a scheduler that is driven correctly (initial noise × σ_max,
scale_model_input, its own timesteps, the mean channels only where it cannot use the variance ones) ends with
samples of standard deviation ≈ s; a wrong scale, timestep or channel count gives a different one or an error.
"""

import diffusers
import numpy as np
import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler

DATA_STD = 0.5
T = 100


class GaussianOracle(ModelMixin, ConfigMixin):
    """A stand-in UNet2DModel (learned variance: 2 × channels out) with the optimal ε̂ for N(0, s² I) data."""

    @register_to_config
    def __init__(self, in_channels: int = 1, out_channels: int = 2, sample_size: int = 8, data_std: float = DATA_STD):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a dtype and a device
        self.sigmas = None  # √((1-ᾱ)/ᾱ) per integer timestep, set from the scheduler

    def forward(self, sample, timestep):
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)[0].item()
        # ᾱ at a (possibly fractional) timestep: σ interpolated linearly in t, as the σ-based schedulers do
        sigma = float(np.interp(t, np.arange(len(self.sigmas)), self.sigmas))
        alpha_bar = 1.0 / (1.0 + sigma**2)
        s2 = self.config.data_std**2
        eps = (1 - alpha_bar) ** 0.5 * sample / (alpha_bar * s2 + 1 - alpha_bar)
        variance = torch.zeros_like(sample)  # v = 0: the midpoint of log β̃_t and log β_t (IDDPM eq. 15)
        return UNet2DOutput(sample=torch.cat([eps, variance], dim=1) + 0 * self.anchor)


def _pipeline():
    scheduler = DDPMExtScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", variance_type="learned_range")
    oracle = GaussianOracle()
    alphas_cumprod = scheduler.alphas_cumprod.double().numpy()
    oracle.sigmas = np.sqrt((1 - alphas_cumprod) / alphas_cumprod)
    pipe = DDPMExtPipeline(oracle, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler_class(name):
    try:
        return getattr(diffusers, name)
    except (ImportError, AttributeError) as err:
        pytest.skip(f"{name} does not import here: {err}")


REFUSED = {"EDMEulerScheduler"}  # its own σ range and EDM preconditioning; it never reads the model's β schedule


def test_the_list_is_diffusers_karras_schedulers():
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers

    assert DDPMExtScheduler._compatibles == [e.name for e in KarrasDiffusionSchedulers]
    assert {"DPMSolverMultistepScheduler", "EulerDiscreteScheduler"} <= set(DDPMExtScheduler._compatibles)


@pytest.mark.parametrize("name", ["DDPMExtScheduler"] + DDPMExtScheduler._compatibles)
def test_swapped_scheduler_samples_the_data_distribution_or_is_refused(name):
    pipe = _pipeline()
    cls = DDPMExtScheduler if name == "DDPMExtScheduler" else _scheduler_class(name)
    try:
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    except ImportError as err:  # a dummy whose backend is not installed (DPMSolverSDEScheduler needs torchsde)
        pytest.skip(f"{name} does not import here: {str(err).strip().splitlines()[0]}")
    generator = torch.Generator().manual_seed(0)
    if name in REFUSED:
        with pytest.raises(ValueError, match="schedulers that work: .*DPMSolverMultistepScheduler, .*") as err:
            pipe(batch_size=2, num_inference_steps=10, generator=generator, output_type="latent")
        assert name in str(err.value) and "EulerDiscreteScheduler" in str(err.value)
        return
    steps = 50  # of T = 100: Heun's error at 20 steps on the cosine schedule is 17 %, at 50 steps 4 %
    x0 = pipe(batch_size=16, num_inference_steps=steps, generator=generator, output_type="latent").images
    assert x0.shape == (16, 1, 8, 8) and torch.isfinite(x0).all()
    std = float(x0.std())
    assert abs(float(x0.mean())) < 0.1, (name, float(x0.mean()))
    assert abs(std / DATA_STD - 1) < 0.15, (name, std)


def test_dpm_solver_and_euler_get_the_mean_channels_and_a_scaled_start():
    """The two the issue names, checked against a mistake each: DPM-Solver cuts learned variances as RGB ([:, :3]),
    so it must get the mean channels only; Euler's chain starts at σ_max, so the noise must be scaled."""
    pipe = _pipeline()
    seen = []
    forward = pipe.unet.forward

    def spy(sample, timestep):
        seen.append((float(sample.std()), float(torch.as_tensor(timestep).reshape(-1)[0])))
        return forward(sample, timestep)

    pipe.unet.forward = spy
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe(batch_size=8, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert pipe.scheduler.init_noise_sigma > 10
    assert abs(seen[0][0] - 1) < 0.1  # scale_model_input brought x_T back to unit variance for the UNet
    assert seen[0][1] != int(seen[0][1]) or seen[0][1] == T - 1
    dpm = diffusers.DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    assert dpm.config.variance_type == "learned_range"  # the config round trip keeps it
    outputs = []
    step = dpm.step
    dpm.step = lambda model_output, *a, **k: outputs.append(model_output.shape[1]) or step(model_output, *a, **k)
    pipe.scheduler = dpm
    pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert outputs == [1] * 5
