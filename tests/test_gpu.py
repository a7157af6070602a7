"""CUDA checks: the scheduler and the sampling loop never sync the host, fp16/bf16 sampling and training work.

Skipped where no CUDA device is present (CI and the project's machines have none); run on a lent GPU with
`python -m pytest -q tests/test_gpu.py`. `torch.cuda.set_sync_debug_mode("error")` turns any host sync inside the
checked region into an error, so "no per-step host sync" is checked, not assumed.
"""

import math

import pytest
import torch
from _models import tiny_unet
from diffusers import DDPMScheduler

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
from ddpm_ext.training import DDPMTrainer, TrainingConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


class _SyncFree:
    """Within the block, any CUDA host synchronisation raises."""

    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_step_on_cuda_matches_diffusers_and_never_syncs(variance_type):
    config = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type=variance_type)
    ours, stock = DDPMExtScheduler(**config), DDPMScheduler(**config)
    for s in (ours, stock):
        s.set_timesteps(50, device=CUDA)
    channels = 6 if variance_type == "learned_range" else 3
    x = torch.randn(4, 3, 16, 16, device=CUDA, generator=torch.Generator(CUDA).manual_seed(0))
    out = torch.randn(4, channels, 16, 16, device=CUDA, generator=torch.Generator(CUDA).manual_seed(1)) * 0.5
    g_ours, g_stock = torch.Generator(CUDA).manual_seed(2), torch.Generator(CUDA).manual_seed(2)
    xs_ours, xs_stock = x.clone(), x.clone()
    with _SyncFree():
        for t in range(980, -1, -20):  # Python ints, as a loop over scheduler.timesteps.tolist() gives
            xs_ours = ours.step(out, t, xs_ours, generator=g_ours).prev_sample
    for t in range(980, -1, -20):
        xs_stock = stock.step(out, t, xs_stock, generator=g_stock).prev_sample
    torch.testing.assert_close(xs_ours, xs_stock, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_mid_chain_start_with_cuda_timesteps_equals_the_cpu_result_and_never_syncs(variance_type, monkeypatch):
    # SDEdit / img2img: start at t=480 of a 50-step chain, timesteps as CUDA tensors (scheduler.timesteps[i]); the
    # same pre-drawn noise on both devices, so any difference is in the coefficients
    config = dict(beta_schedule="squaredcos_cap_v2", variance_type=variance_type)
    cpu, gpu = DDPMExtScheduler(**config), DDPMExtScheduler(**config)
    cpu.set_timesteps(50)
    gpu.set_timesteps(50, device=CUDA)
    start = int((cpu.timesteps == 480).nonzero()[0, 0])
    steps = len(cpu.timesteps) - start
    channels = 6 if variance_type == "learned_range" else 3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    outs = [torch.randn(2, channels, 8, 8, generator=g) * 0.5 for _ in range(steps)]
    noises = [torch.randn(2, 3, 8, 8, generator=g) for _ in range(steps)]
    draws = iter(noises)
    monkeypatch.setattr(cpu, "_draw_noise", lambda like, generator: next(draws))
    x_cpu = x.clone()
    for i in range(steps):
        x_cpu = cpu.step(outs[i], cpu.timesteps[start + i], x_cpu).prev_sample
    draws_gpu = iter([n.to(CUDA) for n in noises])
    monkeypatch.setattr(gpu, "_draw_noise", lambda like, generator: next(draws_gpu))
    outs_gpu = [o.to(CUDA) for o in outs]
    x_gpu = x.to(CUDA)
    with _SyncFree():
        for i in range(steps):
            x_gpu = gpu.step(outs_gpu[i], gpu.timesteps[start + i], x_gpu).prev_sample
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=1e-4, atol=1e-4)


def test_pipeline_loop_on_cuda_never_syncs_between_steps():
    pipe = DDPMExtPipeline(unet=tiny_unet(sample_size=16).to(CUDA), scheduler=DDPMExtScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    steps = 20
    state = {"synced": None}

    def callback(p, i, t, kwargs):
        # Arm the check after the first step (set-up may copy timesteps to the GPU) and disarm it after the last.
        if i == 0:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        if i == steps - 1:
            torch.cuda.set_sync_debug_mode("default")
            state["synced"] = False
        return kwargs

    try:
        image = pipe(batch_size=4, num_inference_steps=steps, output_type="pt", callback_on_step_end=callback,
                     generator=torch.Generator(CUDA).manual_seed(0)).images
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert state["synced"] is False  # the loop ran to its last step under the check
    assert image.device.type == "cuda" and torch.isfinite(image).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sampling_on_cuda_tracks_fp32(dtype):
    unet = tiny_unet(sample_size=16).to(CUDA)
    scheduler = DDPMExtScheduler(num_train_timesteps=100)
    reference = DDPMExtPipeline(unet=unet, scheduler=scheduler)
    reference.set_progress_bar_config(disable=True)
    half = DDPMExtPipeline(unet=tiny_unet(sample_size=16).to(CUDA, dtype), scheduler=scheduler)
    half.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=8, num_inference_steps=10, output_type="pt", eta=0.0)
    a = reference(generator=torch.Generator(CUDA).manual_seed(0), **kwargs).images
    b = half(generator=torch.Generator(CUDA).manual_seed(0), **kwargs).images
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    # eta = 0 is deterministic given x_T; the reduced-precision network only perturbs each step a little.
    tolerance = 0.02 if dtype == torch.float16 else 0.08
    assert (a - b).abs().mean().item() < tolerance


def test_bits_per_dim_on_cuda_agrees_with_cpu():
    unet = tiny_unet(sample_size=8)
    scheduler = DDPMExtScheduler(num_train_timesteps=50)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cpu = DDPMExtPipeline(unet=unet, scheduler=scheduler)
    cpu.set_progress_bar_config(disable=True)
    bpd_cpu = cpu.bits_per_dim(images, generator=torch.Generator().manual_seed(0))
    gpu = DDPMExtPipeline(unet=tiny_unet(sample_size=8).to(CUDA), scheduler=scheduler)
    gpu.set_progress_bar_config(disable=True)
    bpd_gpu = gpu.bits_per_dim(images.to(CUDA), generator=torch.Generator(CUDA).manual_seed(0), timestep_batch_size=5)
    assert bpd_gpu.shape == (16,) and torch.isfinite(bpd_gpu).all()
    # Different noise draws on the two devices: the means agree within their Monte-Carlo error.
    diff = (bpd_gpu.double().cpu().mean() - bpd_cpu.double().mean()).abs().item()
    se = math.hypot(bpd_cpu.double().std().item(), bpd_gpu.double().std().item()) / 4
    assert diff < 4 * se + 1e-3


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_training_on_cuda(tmp_path, precision):
    config = TrainingConfig(
        output_dir=str(tmp_path / "run"), resolution=16, train_batch_size=32, ddpm_num_steps=100,
        ddpm_num_inference_steps=10, lr_warmup_steps=0, learning_rate=2e-3, lr_scheduler="constant", logger="none",
        use_ema=True, mixed_precision=precision, max_train_steps=60, logging_steps=10, variance_type="learned_range",
        loss_type="hybrid", ddpm_beta_schedule="squaredcos_cap_v2", eval_nll_steps=1000, eval_nll_num_images=32,
    )
    trainer = DDPMTrainer(config).setup()
    assert trainer.accelerator.device.type == "cuda" and trainer.accelerator.mixed_precision == precision
    if precision == "fp16":
        assert trainer.accelerator.scaler is not None  # loss scaling is on
    trainer.train_steps(10)
    first = trainer.last_loss
    trainer.train_steps(50)
    last = trainer.last_loss
    assert all(p.dtype == torch.float32 for p in trainer.unet.parameters())  # fp32 master weights
    assert math.isfinite(first) and math.isfinite(last) and last < first
    bpd = trainer.evaluate_bits_per_dim()
    assert math.isfinite(bpd) and 0 < bpd < 16


def test_fp16_training_run_on_cuda_saves_a_pipeline_that_samples(tmp_path):
    out = tmp_path / "run"
    result = train(TrainingConfig(
        output_dir=str(out), resolution=16, train_batch_size=32, ddpm_num_steps=100, ddpm_num_inference_steps=10,
        lr_warmup_steps=0, logger="none", use_ema=True, mixed_precision="fp16", max_train_steps=20,
        checkpointing_steps=10, eval_nll_steps=20, eval_nll_num_images=16,
    ))
    assert result.global_step == 20 and math.isfinite(result.final_loss) and math.isfinite(result.final_bits_per_dim)
    pipe = DDPMExtPipeline.from_pretrained(str(out), torch_dtype=torch.float16).to(CUDA)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=4, num_inference_steps=10, output_type="pt",
                  generator=torch.Generator(CUDA).manual_seed(0)).images
    assert images.shape == (4, 1, 16, 16) and torch.isfinite(images).all()


@pytest.mark.parametrize(
    "kwargs,dtype",
    [
        (dict(dtype=torch.float16), torch.float16),
        (dict(torch_dtype={"unet": torch.bfloat16, "default": torch.float16}), torch.bfloat16),
    ],
)
def test_half_precision_loading_through_dtype_keywords_samples_on_cuda(tmp_path, kwargs, dtype):
    DDPMExtPipeline(tiny_unet(sample_size=16), DDPMExtScheduler(num_train_timesteps=100)).save_pretrained(tmp_path / "m")
    pipe = DDPMExtPipeline.from_pretrained(tmp_path / "m", **kwargs).to(CUDA)
    assert pipe.unet.dtype == dtype
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=10, output_type="pt",
                  generator=torch.Generator(CUDA).manual_seed(0)).images
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()
