"""DDPMExtPipeline sampling and bits_per_dim, against stock diffusers and independent computations."""

import numpy as np
import pytest
import torch
from _models import tiny_unet
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler
from PIL import Image

from ddpm_ext import BitsPerDimOutput, DDPMExtPipeline, DDPMExtScheduler


def _pipe(variance_type="fixed_small", channels=1, T=50, **cfg):
    learned = variance_type.startswith("learned")
    unet = tiny_unet(channels, 2 * channels if learned else channels)
    pipe = DDPMExtPipeline(unet, DDPMExtScheduler(num_train_timesteps=T, variance_type=variance_type, **cfg))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, n=2, seed=0, steps=10, **kw):
    return pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps, output_type="pt", **kw).images


def test_output_types_pil_np_pt():
    pipe = _pipe()
    pil = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images
    assert len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (8, 8)
    np_img = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    pt_img = _sample(pipe, steps=3)
    assert np_img.shape == (2, 8, 8, 1) and pt_img.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(np_img, pt_img.permute(0, 2, 3, 1).numpy())
    assert float(pt_img.min()) >= 0 and float(pt_img.max()) <= 1


def test_same_seeded_images_as_stock_ddpm_pipeline_with_ddpm_scheduler():
    for cfg in ({}, dict(variance_type="learned_range", beta_schedule="squaredcos_cap_v2")):
        ours = _pipe(**cfg)
        stock = DDPMPipeline(ours.unet, DDPMScheduler(num_train_timesteps=50, **cfg))
        stock.set_progress_bar_config(disable=True)
        expected = stock(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np").images
        np.testing.assert_allclose(_sample(ours).permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


def test_generator_list_gives_each_image_its_own_stream():
    pipe = _pipe(variance_type="learned_range")
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    batch = pipe(batch_size=3, generator=gens([10, 11, 12]), num_inference_steps=8, output_type="pt").images
    alone = pipe(batch_size=1, generator=gens([11]), num_inference_steps=8, output_type="pt").images
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=0)


def test_eta_zero_matches_stock_ddim_pipeline():
    pipe = _pipe(clip_sample=False)
    ddim = DDIMPipeline(pipe.unet, DDIMScheduler.from_config(pipe.scheduler.config))
    ddim.set_progress_bar_config(disable=True)
    expected = ddim(
        batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, eta=0.0, output_type="np"
    ).images
    ours = _sample(pipe, eta=0.0)
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


def test_callback_on_step_end_sees_every_step_and_can_replace_the_image():
    pipe = _pipe()
    seen = []

    def callback(p, i, t, kwargs):
        seen.append((i, t, tuple(kwargs["image"].shape), tuple(kwargs["model_output"].shape)))
        return {"image": torch.full_like(kwargs["image"], -1.0)}  # force black

    out = _sample(pipe, steps=5, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["image", "model_output"])
    assert [s[0] for s in seen] == list(range(5))
    assert [s[1] for s in seen] == pipe.scheduler.timesteps.tolist()
    assert torch.equal(out, torch.zeros_like(out))


def test_callback_contract_of_diffusers_latents_num_timesteps_and_latent_output():
    pipe = _pipe()
    assert pipe.num_timesteps is None
    seen = []

    def callback(p, i, t, kwargs):
        assert set(kwargs) == {"latents"}  # the default tensor inputs
        seen.append((i, p.num_timesteps))
        if i == p.num_timesteps - 1:
            kwargs["latents"] = torch.zeros_like(kwargs["latents"])
        return kwargs

    latent = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                  output_type="latent", callback_on_step_end=callback).images
    assert seen == [(i, 4) for i in range(4)] and pipe.num_timesteps == 4
    assert isinstance(latent, torch.Tensor) and latent.shape == (2, 1, 8, 8) and latent.abs().sum() == 0
    # the raw final sample: "pt" is that tensor mapped from [-1, 1] to [0, 1]
    raw = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(1), output_type="latent",
               return_dict=False)[0]
    pt = _sample(pipe, steps=4, seed=1)
    torch.testing.assert_close(pt, (raw / 2 + 0.5).clamp(0, 1))
    assert float(raw.abs().max()) > 0


def test_callback_image_alias_still_replaces_the_sample_when_returned_with_latents():
    pipe = _pipe()

    def callback(p, i, t, kwargs):
        assert kwargs["image"] is kwargs["latents"]
        return {**kwargs, "image": torch.full_like(kwargs["image"], -1.0)}  # only the alias changed

    out = _sample(pipe, steps=3, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "image"])
    assert torch.equal(out, torch.zeros_like(out))


def test_scheduler_swap_to_ddim_and_back_keeps_results():
    pipe = _pipe()
    before = _sample(pipe)
    config = pipe.scheduler.config
    pipe.scheduler = DDIMScheduler.from_config(config)
    ddim_images = _sample(pipe, eta=0.5)
    assert ddim_images.shape == before.shape and torch.isfinite(ddim_images).all()
    pipe.scheduler = DDPMExtScheduler.from_config(pipe.scheduler.config)
    torch.testing.assert_close(_sample(pipe), before)


def test_learned_variance_unet_samples_with_a_ddim_scheduler_by_dropping_variance_channels():
    pipe = _pipe(variance_type="learned_range")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert _sample(pipe, eta=0.0).shape == (2, 1, 8, 8)


def test_bf16_unet_samples_on_cpu():
    pipe = _pipe()
    pipe.unet.to(torch.bfloat16)
    out = _sample(pipe, steps=4)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_progress_bar_follows_set_progress_bar_config(capsys):
    pipe = _pipe()
    pipe.set_progress_bar_config(disable=False)
    _sample(pipe, steps=3)
    assert "3/3" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    _sample(pipe, steps=3)
    pipe.bits_per_dim(torch.full((1, 1, 8, 8), -1.0))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_inference_steps=0), r"num_inference_steps must be an integer in \[1, 50\]"),
        (dict(num_inference_steps=51), r"num_inference_steps must be an integer in \[1, 50\]"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(batch_size=2, generator=[torch.Generator()]), "list of 1 generators for batch_size=2"),
        (dict(output_type="jpg"), "output_type='jpg' is not supported"),
        (dict(eta=-1.0), "eta must be >= 0"),
        (dict(callback_on_step_end_tensor_inputs=["noise"]), "not allowed"),  # "latents" is allowed since issue 13
    ],
)
def test_bad_call_arguments_raise_before_sampling(kwargs, match):
    pipe = _pipe()
    calls = []
    pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)
    assert calls == []  # nothing was computed


def test_unet_channels_must_fit_the_variance_type():
    with pytest.raises(ValueError, match="needs a UNet with out_channels = 2 × in_channels = 2"):
        DDPMExtPipeline(tiny_unet(1, 1), DDPMExtScheduler(variance_type="learned_range"))
    with pytest.raises(ValueError, match="out_channels=2 but in_channels=1"):
        DDPMExtPipeline(tiny_unet(1, 2), DDPMExtScheduler())
    pipe = DDPMExtPipeline(tiny_unet(1), DDPMScheduler())
    with pytest.raises(ValueError, match="eta=0.0 needs a scheduler whose step takes eta; DDPMScheduler"):
        pipe(eta=0.0)


# ---------------------------------------------------------------- bits_per_dim
def _digits_like(n=3, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, 8, 8), generator=g, dtype=torch.uint8)


def test_bits_per_dim_is_the_sum_of_prior_and_every_scheduler_term():
    pipe = _pipe(variance_type="learned_range", T=20)
    x_u8 = _digits_like()
    out = pipe.bits_per_dim(x_u8, generator=torch.Generator().manual_seed(0), return_terms=True)
    assert isinstance(out, BitsPerDimOutput) and out.vb_terms_bpd.shape == (3, 20)
    torch.testing.assert_close(out.bits_per_dim, out.prior_bpd + out.vb_terms_bpd.sum(1))
    torch.testing.assert_close(out.decoder_bpd, out.vb_terms_bpd[:, 0])
    # recompute independently with the scheduler's terms and the same noise stream
    sched, x0 = pipe.scheduler, x_u8.float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    total = sched.prior_bpd(x0)
    for t in range(19, -1, -1):
        noise = torch.randn(x0.shape, generator=g)
        tt = torch.full((3,), t)
        xt = sched.add_noise(x0, noise, tt)
        total = total + sched.vb_terms_bpd(pipe.unet(xt, tt).sample, x0, xt, tt)["output"]
    torch.testing.assert_close(out.bits_per_dim, total, rtol=1e-5, atol=1e-5)
    assert (out.vb_terms_bpd >= 0).all() and (out.prior_bpd >= 0).all()


def test_bits_per_dim_takes_uint8_float_and_pil_alike_and_timestep_batching_changes_nothing():
    pipe = _pipe(T=12)
    x_u8 = _digits_like(n=2)
    ref = pipe.bits_per_dim(x_u8, generator=torch.Generator().manual_seed(1))
    as_float = pipe.bits_per_dim(x_u8.float() / 127.5 - 1, generator=torch.Generator().manual_seed(1))
    as_pil = pipe.bits_per_dim(
        [Image.fromarray(x.squeeze(0).numpy(), mode="L") for x in x_u8], generator=torch.Generator().manual_seed(1)
    )
    batched = pipe.bits_per_dim(x_u8, generator=torch.Generator().manual_seed(1), timestep_batch_size=5, batch_size=1)
    for other in (as_float, as_pil, batched):
        torch.testing.assert_close(other, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.full((1, 1, 8, 8), 0.001), "256-level grid"),
        (torch.full((1, 1, 8, 8), 1.5), r"must lie in \[-1, 1\]"),
        (torch.full((1, 3, 8, 8), -1.0), "images have 3 channels but the UNet takes 1"),
        (torch.full((1, 1, 16, 16), -1.0), r"images are \(16, 16\) but the UNet was trained at \(8, 8\)"),
        (torch.zeros(1, 8, 8), r"shape \[B, C, H, W\]"),
        (np.zeros((1, 1, 8, 8)), "torch.Tensor or PIL images"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.int32), "uint8 or float"),
    ],
)
def test_bits_per_dim_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        _pipe(T=5).bits_per_dim(images)


# ------------------------------------------------------------------ inputs refused at the boundary (issue 14)
@pytest.mark.parametrize("eta", [float("nan"), float("inf"), -float("inf"), "0.5", 1.5, 1.0 + 1e-9, True])
def test_eta_outside_0_1_or_not_a_number_is_refused_before_sampling(eta):
    pipe = _pipe()
    calls = []
    pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=r"eta must be >= 0 and <= 1, got .*allowed: a number in \[0, 1\]"):
        pipe(num_inference_steps=3, eta=eta)
    assert calls == []


@pytest.mark.parametrize("eta", [0, 1, 0.0, 1.0, np.float32(0.5)])
def test_eta_in_0_1_samples_finite_images(eta):
    images = _sample(_pipe(), steps=3, eta=eta)
    assert torch.isfinite(images).all() and images.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("generator", ["seed", 0, [torch.Generator(), "seed"]])
def test_a_generator_that_is_not_a_torch_generator_is_refused_by_sampling_and_bits_per_dim(generator):
    pipe = _pipe(T=5)
    with pytest.raises(ValueError, match=r"generator=.* is not allowed; expected None, a torch.Generator"):
        pipe(batch_size=2, num_inference_steps=2, generator=generator)
    with pytest.raises(ValueError, match=r"generator=.* is not allowed; expected None, a torch.Generator"):
        pipe.bits_per_dim(_digits_like(n=2), generator=generator)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_bits_per_dim_refuses_non_finite_pixels(bad):
    images = _digits_like(n=2).float() / 127.5 - 1
    images[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"images hold 1 NaN or infinite values; allowed: finite values in \[-1, 1\]"):
        _pipe(T=5).bits_per_dim(images)


@pytest.mark.parametrize("images", [torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, 8, 8, dtype=torch.uint8)])
def test_bits_per_dim_refuses_an_empty_batch(images):
    with pytest.raises(ValueError, match=r"images is an empty batch \(shape \(0, 1, 8, 8\)\)"):
        _pipe(T=5).bits_per_dim(images)


def test_bits_per_dim_takes_fp16_and_bf16_images_on_the_grid_and_gives_the_uint8_figures():
    pipe = _pipe(T=8)
    x_u8 = _digits_like(n=2)
    x_u8[0, 0, 0, :3] = torch.tensor([0, 128, 255], dtype=torch.uint8)  # the grid's ends and its middle
    ref = pipe.bits_per_dim(x_u8, generator=torch.Generator().manual_seed(2))
    variants = {
        "fp16 rounded": (x_u8.float() / 127.5 - 1).half(),  # up to 0.031 levels off the grid
        "fp16 arithmetic": x_u8.half() / 127.5 - 1,  # up to 0.062 levels off
        "bf16 rounded": (x_u8.float() / 127.5 - 1).bfloat16(),  # up to 0.25 levels off
    }
    for name, images in variants.items():
        got = pipe.bits_per_dim(images, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(got, ref, rtol=0, atol=0, msg=name)


def test_bits_per_dim_refuses_fp16_images_off_the_grid_with_advice_that_works():
    pipe = _pipe(T=5)
    x_u8 = _digits_like(n=2)
    off_grid = ((x_u8.float().clamp(max=254) + 0.5) / 127.5 - 1).half()  # half a level off: exact in fp16
    with pytest.raises(ValueError, match=r"0\.5 levels off it \(allowed in torch.float16: 0\.125\)") as exc:
        pipe.bits_per_dim(off_grid)
    assert "((x.float() + 1) * 127.5).round() / 127.5 - 1" in str(exc.value)
    pipe.bits_per_dim(((off_grid.float() + 1) * 127.5).round() / 127.5 - 1)  # the advice, followed, is accepted
