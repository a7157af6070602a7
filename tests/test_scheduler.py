"""DDPMExtScheduler against independent computations: diffusers' DDPMScheduler, float64 Bayes' rule, closed forms,
and statistical checks of the forward chain."""

import inspect
import itertools
import math

import numpy as np
import pytest
import torch
from _models import tiny_unet
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler
from scipy import stats

from ddpm_ext import DDPMExtScheduler


def _pair(**cfg):
    return DDPMScheduler(**cfg), DDPMExtScheduler(**cfg)


def _model_output(shape, learned, seed):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(shape, generator=g)
    if learned:
        # a trained learned-range network outputs its variance channels in about [-1, 1]
        out = torch.cat([out, torch.tanh(torch.randn(shape, generator=g))], dim=1)
    return out


# ---------------------------------------------------------------- config compatibility
def test_config_keys_and_defaults_equal_ddpm_scheduler():
    ours = inspect.signature(DDPMExtScheduler.__init__).parameters
    theirs = inspect.signature(DDPMScheduler.__init__).parameters
    assert list(ours) == list(theirs)
    for name, p in theirs.items():
        assert ours[name].default == p.default, name


def test_config_round_trips_between_ddpm_ddim_and_ours(tmp_path):
    ddpm = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)
    ours = DDPMExtScheduler.from_config(ddpm.config)
    assert {k: ours.config[k] for k in ddpm.config} == dict(ddpm.config)
    back = DDPMScheduler.from_config(ours.config)
    assert dict(back.config) == dict(ddpm.config)
    ddim = DDIMScheduler.from_config(ours.config)
    assert ddim.config.prediction_type == "v_prediction"
    assert torch.allclose(ddim.alphas_cumprod, ours.alphas_cumprod, rtol=1e-5)
    names = {c.__name__ for c in ours.compatibles}
    assert {"DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler"} <= names
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = DDPMExtScheduler.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(ours.config)
    assert torch.equal(loaded.alphas_cumprod, ours.alphas_cumprod)


# ---------------------------------------------------------------- parity with DDPMScheduler
SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
PREDICTIONS = ["epsilon", "sample", "v_prediction"]
VARIANCES = ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"]
SPACINGS = ["leading", "trailing", "linspace"]


def _run_parity(cfg, num_inference_steps, batch=2, channels=3, size=4):
    theirs, ours = _pair(**cfg)
    if num_inference_steps is not None:
        theirs.set_timesteps(num_inference_steps)
        ours.set_timesteps(num_inference_steps)
    assert torch.equal(theirs.timesteps, ours.timesteps)
    learned = cfg.get("variance_type", "fixed_small").startswith("learned")
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    last = theirs.timesteps[-1]
    for i, t in enumerate(theirs.timesteps):
        out = _model_output((batch, channels, size, size), learned, seed=100 + i)
        a = theirs.step(out, t, x, generator=gen_a)
        b = ours.step(out, t, x, generator=gen_b)
        torch.testing.assert_close(b.pred_original_sample, a.pred_original_sample, rtol=2e-4, atol=2e-5)
        if t == last and t > 0 and (learned or "large" in cfg.get("variance_type", "")):
            # deliberate difference: the step into x_0 adds no noise (DDPM Algorithm 2; its posterior variance is
            # 0). When the last timestep is > 0 (trailing/linspace), DDPMScheduler adds noise of variance β_t there
            # for fixed_large, or interpolates towards log(1e-20) for learned_range. Ours returns the mean.
            mean = ours.step(out, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
            torch.testing.assert_close(b.prev_sample, mean)
        else:
            torch.testing.assert_close(b.prev_sample, a.prev_sample, rtol=2e-4, atol=2e-5)
        x = a.prev_sample
    # the generators advanced identically
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


@pytest.mark.parametrize(
    "schedule,prediction,variance,spacing",
    list(itertools.product(SCHEDULES, PREDICTIONS, VARIANCES, SPACINGS)),
)
def test_step_parity_with_ddpm_scheduler_respaced(schedule, prediction, variance, spacing):
    cfg = dict(beta_schedule=schedule, prediction_type=prediction, variance_type=variance, timestep_spacing=spacing)
    for n in (1, 7, 25):
        _run_parity(cfg, n)


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        dict(clip_sample=False),
        dict(thresholding=True, sample_max_value=2.0),
        dict(clip_sample_range=0.5, prediction_type="v_prediction"),
        dict(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", clip_sample=False),
        dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range"),
        dict(steps_offset=1, timestep_spacing="leading"),
        dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"),
        dict(trained_betas=np.linspace(1e-4, 0.02, 1000).tolist()),
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items() if k != "trained_betas") or "default",
)
def test_step_parity_with_ddpm_scheduler_options(cfg):
    for n in (10, 50):
        _run_parity(cfg, n)


@pytest.mark.parametrize("cfg", [{}, dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range")])
def test_step_parity_over_the_full_1000_step_chain(cfg):
    _run_parity(cfg, None, batch=1, channels=1, size=2)


def test_add_noise_velocity_and_tables_match_ddpm_scheduler():
    for schedule in SCHEDULES:
        theirs, ours = _pair(beta_schedule=schedule)
        torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.betas, theirs.betas, rtol=1e-5, atol=1e-8)
        x0 = torch.randn(8, 3, 4, 4)
        noise = torch.randn_like(x0)
        t = torch.tensor([0, 1, 10, 100, 500, 900, 998, 999])
        torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t), rtol=1e-5, atol=1e-5
        )
    _, ours = _pair()
    for t in (0, 5, 999):
        assert ours.previous_timestep(t) == t - 1
    ours.set_timesteps(10)
    assert ours.previous_timestep(900) == 800 and ours.previous_timestep(0) == -1


def test_stock_ddpm_pipeline_gives_the_same_seeded_images_with_either_scheduler():
    unet = tiny_unet(in_channels=3)
    cfg = dict(num_train_timesteps=100, beta_end=0.2)
    images = []
    for cls in (DDPMScheduler, DDPMExtScheduler):
        pipe = DDPMPipeline(unet=unet, scheduler=cls(**cfg))
        pipe.set_progress_bar_config(disable=True)
        out = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=20, output_type="np")
        images.append(out.images)
    np.testing.assert_allclose(images[1], images[0], atol=1e-5)


# ---------------------------------------------------------------- deliberate differences from DDPMScheduler
def test_fixed_large_log_samples_from_n_mean_beta_where_ddpm_scheduler_gives_nan():
    theirs, ours = _pair(variance_type="fixed_large_log", num_train_timesteps=10, beta_end=0.2, clip_sample=False)
    x = torch.zeros(1, 1, 200, 200)
    out = torch.zeros_like(x)
    t = 5
    assert torch.isnan(theirs.step(out, t, x, generator=torch.Generator().manual_seed(0)).prev_sample).all()
    prev = ours.step(out, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    mean = ours.step(out, t, x, eta=0.0).prev_sample  # zero model output: mean is the same deterministic point
    beta = float(ours._tables64["betas"][t])
    assert torch.isfinite(prev).all()
    resid = (prev - mean).flatten().double()
    n = resid.numel()
    # sample variance of N(0, β): relative standard error √(2/n)
    assert abs(resid.var().item() / beta - 1) < 5 * math.sqrt(2 / n)


def test_learned_variance_is_a_log_variance_where_ddpm_scheduler_takes_its_square_root():
    theirs, ours = _pair(variance_type="learned", num_train_timesteps=10, beta_end=0.2, clip_sample=False)
    x = torch.zeros(1, 1, 200, 200)
    log_var = torch.full_like(x, math.log(0.05))
    out = torch.cat([torch.zeros_like(x), log_var], dim=1)
    assert torch.isnan(theirs.step(out, 5, x, generator=torch.Generator().manual_seed(0)).prev_sample).all()
    prev = ours.step(out, 5, x, generator=torch.Generator().manual_seed(0)).prev_sample
    mean = ours.step(out, 5, x, eta=0.0).prev_sample
    resid = (prev - mean).flatten().double()
    assert abs(resid.var().item() / 0.05 - 1) < 5 * math.sqrt(2 / resid.numel())


# ---------------------------------------------------------------- the math against independent computations
def test_forward_chain_matches_closed_form_q_xt_given_x0():
    sched = DDPMExtScheduler()
    betas = sched._tables64["betas"]
    n = 40_000
    g = torch.Generator().manual_seed(0)
    # a non-Gaussian x_0: a two-point mixture with unequal weights, plus a little uniform jitter
    x0 = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.3, 1.0, -0.6)
    x0 = x0 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64)
    x = x0.clone()
    checkpoints = {10, 100, 400, 999}
    for t in range(1000):
        # DDPM eq. 2: q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t)
        x = math.sqrt(1 - betas[t]) * x + math.sqrt(betas[t]) * torch.randn(n, generator=g, dtype=torch.float64)
        if t in checkpoints:
            a = float(sched._tables64["alphas_cumprod"][t])
            closed = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(n, generator=g, dtype=torch.float64)
            # moments against the closed form's exact moments, with 5-standard-error tolerances
            m_exact = math.sqrt(a) * x0.mean().item()
            v_exact = a * x0.var().item() + (1 - a)
            sd = math.sqrt(v_exact)
            assert abs(x.mean().item() - m_exact) < 5 * sd / math.sqrt(n)
            assert abs(x.var().item() / v_exact - 1) < 5 * math.sqrt(2 / n) + 0.01 * (t == 10)
            # and a two-sample KS test against samples drawn from the closed form
            assert stats.ks_2samp(x.numpy(), closed.numpy()).pvalue > 1e-3


def test_q_posterior_matches_bayes_rule_in_float64():
    sched = DDPMExtScheduler(beta_schedule="squaredcos_cap_v2")
    b = sched._tables64["betas"]
    ac = np.cumprod(1 - b)
    t = torch.tensor([1, 2, 50, 500, 998, 999])
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 1, 3, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(6, 1, 3, 3, generator=g, dtype=torch.float64)
    mean, var, _ = sched.q_posterior(x0, xt, t)
    for i, ti in enumerate(t.tolist()):
        # product of q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t) and q(x_{t-1} | x_0) = N(√ᾱ_{t-1} x_0, 1 - ᾱ_{t-1})
        alpha, prev = 1 - b[ti], ac[ti - 1]
        precision = alpha / b[ti] + 1 / (1 - prev)
        m = (math.sqrt(alpha) / b[ti] * xt[i] + math.sqrt(prev) / (1 - prev) * x0[i]) / precision
        torch.testing.assert_close(mean[i], m, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var[i], torch.full_like(var[i], 1 / precision), rtol=1e-10, atol=0)


def test_posterior_variance_at_t1_is_float64_accurate():
    sched = DDPMExtScheduler()
    b = np.linspace(1e-4, 0.02, 1000)
    ac = np.cumprod(1 - b)
    exact = b[1] * (1 - ac[0]) / (1 - ac[1])
    assert abs(sched.posterior_variance[1].item() / exact - 1) < 1e-6  # float32 storage rounding only
    assert abs(sched._tables64["posterior_variance"][1] / exact - 1) < 1e-12


def test_cosine_schedule_follows_iddpm_eq17():
    T = 1000
    sched = DDPMExtScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    ac = sched._tables64["alphas_cumprod"]
    betas = sched._tables64["betas"]
    clipped = np.flatnonzero(betas >= 0.999)
    assert clipped.tolist() == [T - 1]  # only the last β reaches the 0.999 cap
    for t in (1, 10, 100, 500, 900, 998):
        assert abs(ac[t - 1] - f(t) / f(0)) < 1e-12  # ᾱ_t = f(t)/f(0), paper's t = index + 1
    assert betas.max() == pytest.approx(0.999)


def test_linear_schedule_terminal_alpha_bar_and_zero_snr_rescale():
    assert DDPMExtScheduler().alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=2e-3)
    zsnr = DDPMExtScheduler(rescale_betas_zero_snr=True)
    assert zsnr._tables64["alphas_cumprod"][-1] == 0.0
    assert zsnr._tables64["alphas_cumprod"][0] == pytest.approx(1 - 1e-4, rel=1e-12)


def test_ddim_eta0_is_deterministic_and_eta1_equals_the_ancestral_step():
    for spacing, n in (("leading", None), ("trailing", 20)):
        sched = DDPMExtScheduler(timestep_spacing=spacing)
        if n:
            sched.set_timesteps(n)
        x = torch.randn(2, 3, 4, 4)
        for t in sched.timesteps[:-1][:: max(1, len(sched.timesteps) // 7)]:
            out = torch.randn_like(x)
            a = sched.step(out, t, x, eta=0.0, generator=torch.Generator().manual_seed(0)).prev_sample
            b = sched.step(out, t, x, eta=0.0, generator=torch.Generator().manual_seed(1)).prev_sample
            assert torch.equal(a, b)
            # η = 1: the same Gaussian as the ancestral step (mean and σ² = β̃), so the same draw lands equally
            ddim = sched.step(out, t, x, eta=1.0, generator=torch.Generator().manual_seed(5)).prev_sample
            ddpm = sched.step(out, t, x, generator=torch.Generator().manual_seed(5)).prev_sample
            torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-5)


def test_p_mean_variance_for_every_variance_type_against_float64_formulas():
    T = 50
    b = np.linspace(1e-3, 0.2, T)
    ac = np.cumprod(1 - b)
    acp = np.append(1.0, ac[:-1])
    post_var = b * (1 - acp) / (1 - ac)
    post_log_clipped = np.log(np.append(post_var[1], post_var[1:]))
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    v = torch.rand(4, 2, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.tensor([0, 1, 17, 49])
    expected_log_var = {
        "fixed_small": lambda i: torch.full_like(xt[0], post_log_clipped[i]),
        "fixed_large": lambda i: torch.full_like(xt[0], math.log(post_var[1] if i == 0 else b[i])),
        "learned": lambda i: v[k],
        "learned_range": lambda i: (v[k] + 1) / 2 * math.log(b[i]) + (1 - (v[k] + 1) / 2) * post_log_clipped[i],
    }
    for variance_type, log_var_fn in expected_log_var.items():
        sched = DDPMExtScheduler(
            num_train_timesteps=T, beta_start=1e-3, beta_end=0.2, variance_type=variance_type, clip_sample=False
        )
        out = torch.cat([eps, v], 1) if variance_type.startswith("learned") else eps
        mean, var, log_var, x0 = sched.p_mean_variance(out, xt, t)
        for k, i in enumerate(t.tolist()):
            x0_ref = (xt[k] - math.sqrt(1 - ac[i]) * eps[k]) / math.sqrt(ac[i])
            mean_ref = b[i] * math.sqrt(acp[i]) / (1 - ac[i]) * x0_ref + (1 - acp[i]) * math.sqrt(1 - b[i]) / (
                1 - ac[i]
            ) * xt[k]
            torch.testing.assert_close(x0[k], x0_ref, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(mean[k], mean_ref, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(log_var[k], log_var_fn(i), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(var[k], log_var_fn(i).exp(), rtol=1e-10, atol=1e-12)


def test_batched_timesteps_equal_per_sample_calls():
    sched = DDPMExtScheduler(variance_type="learned_range", prediction_type="v_prediction")
    xt = torch.randn(3, 2, 4, 4)
    out = torch.randn(3, 4, 4, 4)
    t = torch.tensor([3, 400, 999])
    batched = sched.p_mean_variance(out, xt, t)
    for k in range(3):
        single = sched.p_mean_variance(out[k : k + 1], xt[k : k + 1], int(t[k]))
        for a, s in zip(batched, single):
            torch.testing.assert_close(a[k : k + 1], s)


def test_prediction_types_agree_on_x0_when_given_consistent_targets():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(2, 1, 4, 4, generator=g)
    t = torch.tensor([30, 700])
    preds = {}
    for prediction in PREDICTIONS:
        sched = DDPMExtScheduler(prediction_type=prediction, clip_sample=False)
        xt = sched.add_noise(x0, noise, t)
        target = {"epsilon": noise, "sample": x0, "v_prediction": sched.get_velocity(x0, noise, t)}[prediction]
        preds[prediction] = sched.p_mean_variance(target, xt, t)[3]
        torch.testing.assert_close(preds[prediction], x0, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- errors name the key and the allowed values
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(beta_schedule="cosine"), "beta_schedule='cosine'.*linear"),
        (dict(variance_type="small"), "variance_type='small'.*fixed_small"),
        (dict(prediction_type="eps"), "prediction_type='eps'.*epsilon"),
        (dict(timestep_spacing="uniform"), "timestep_spacing='uniform'.*leading"),
        (dict(beta_start=0.0), r"\(0, 1\)"),
        (dict(beta_end=1.5), r"\(0, 1\)"),
        (dict(beta_start=0.02, beta_end=0.01), "beta_end=0.01 must be greater than beta_start=0.02"),
        (dict(beta_start=0.02, beta_end=0.02), "must be greater"),
        (dict(trained_betas=[0.1] * 10), "trained_betas has 10 values but num_train_timesteps=1000"),
        (dict(num_train_timesteps=3, trained_betas=[0.1, 1.0, 0.2]), r"beta\[1\]=1.0.*\(0, 1\)"),
        (dict(num_train_timesteps=0), "num_train_timesteps"),
    ],
)
def test_bad_config_raises_value_error_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDPMExtScheduler(**kwargs)


def test_bad_runtime_inputs_raise_value_errors():
    sched = DDPMExtScheduler()
    for n in (0, 1001, -3):
        with pytest.raises(ValueError, match=r"num_inference_steps must be in \[1, 1000\]"):
            sched.set_timesteps(n)
    sched.set_timesteps(10)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="timestep 5 is not in the scheduler's current timesteps"):
        sched.step(torch.zeros_like(x), 5, x)
    with pytest.raises(ValueError, match="model output has 6 channels but variance_type='fixed_small' needs 3"):
        sched.step(torch.zeros(1, 6, 4, 4), 900, x)
    learned = DDPMExtScheduler(variance_type="learned_range")
    with pytest.raises(ValueError, match="model output has 3 channels but variance_type='learned_range' needs 6"):
        learned.step(torch.zeros_like(x), 999, x)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 1000\)"):
        sched.add_noise(x, x, torch.tensor([1000]))
    with pytest.raises(ValueError, match="strictly descending"):
        sched.set_timesteps(timesteps=[10, 20])


# ------------------------------------------------------------------ inputs refused at the boundary (issue 14)
@pytest.mark.parametrize("eta", [float("nan"), float("inf"), "0.5", 1.5, -0.5, True])
def test_step_refuses_eta_outside_0_1_or_not_a_number(eta):
    sched = DDPMExtScheduler(num_train_timesteps=20)
    sched.set_timesteps(5)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"eta must be >= 0 and <= 1, got .*allowed: a number in \[0, 1\]"):
        sched.step(x, int(sched.timesteps[0]), x, eta=eta)


@pytest.mark.parametrize("eta", [0, 1, np.float64(0.5)])
def test_step_takes_eta_in_0_1(eta):
    sched = DDPMExtScheduler(num_train_timesteps=20)
    sched.set_timesteps(5)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = sched.step(x, int(sched.timesteps[0]), x, eta=eta, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out.prev_sample).all()


@pytest.mark.parametrize("timesteps", [[999.5, 500], [999, 0.25], ["999", 0], [True, 0], [float("nan")],
                                       torch.tensor([999.5, 2.0])])
def test_custom_timesteps_that_are_not_integers_are_refused(timesteps):
    with pytest.raises(ValueError, match=r"custom timesteps must be integers, got .*allowed: integers in \[0,"):
        DDPMExtScheduler().set_timesteps(timesteps=timesteps)


def test_custom_timesteps_given_as_integral_floats_numpy_or_tensors_are_taken_exactly():
    sched = DDPMExtScheduler()
    for given in ([999.0, 500.0, 0.0], [np.int64(999), np.float32(500.0), 0], torch.tensor([999, 500, 0]),
                  torch.tensor([999.0, 500.0, 0.0])):
        sched.set_timesteps(timesteps=given)
        assert sched.timesteps.tolist() == [999, 500, 0] and sched.timesteps.dtype == torch.int64


@pytest.mark.parametrize("key", ["clip_sample", "thresholding", "rescale_betas_zero_snr"])
@pytest.mark.parametrize("value", ["yes", "False", 1, 0, None])
def test_bool_config_keys_must_be_bools(key, value):
    with pytest.raises(ValueError, match=rf"{key}={value!r} is not allowed; expected a bool \(True or False\)"):
        DDPMExtScheduler(**{key: value})
    with pytest.raises(ValueError, match=rf"{key}={value!r} is not allowed"):
        DDPMExtScheduler.from_config({**{k: v for k, v in DDPMExtScheduler().config.items() if k[0] != "_"}, key: value})
    assert DDPMExtScheduler(**{key: np.bool_(False)}).config[key] == np.bool_(False)


@pytest.mark.parametrize("shape", [(1, 20), (10, 2), (20, 1)])
def test_trained_betas_must_be_one_dimensional(shape):
    betas = np.full(shape, 0.01)
    with pytest.raises(ValueError, match=rf"trained_betas has shape \({shape[0]}, {shape[1]}\); allowed: a 1-D list"):
        DDPMExtScheduler(num_train_timesteps=20, trained_betas=betas)
    assert DDPMExtScheduler(num_train_timesteps=20, trained_betas=betas.reshape(-1).tolist()).betas.shape == (20,)


# ---------------------------------------------------------------- the device-tensor (gather) path of step
@pytest.fixture
def device_timesteps(monkeypatch):
    """Treat every tensor timestep as one on an accelerator (its value unreadable without a host sync), so the CPU
    runs the table-gather path that CUDA / MPS timesteps take."""
    import ddpm_ext.schedulers.scheduling_ddpm_ext as module

    monkeypatch.setattr(module, "_reads_on_host", lambda t: not isinstance(t, torch.Tensor))


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range", "learned"])
@pytest.mark.parametrize(
    "sequence",
    [
        [480, 460, 440, 420],  # mid-chain start (SDEdit / img2img)
        [480, 480, 480],  # the same step repeated
        [980, 940, 880, 20, 0],  # steps skipped, down to the step into x_0
    ],
    ids=["mid_chain_start", "repeated_step", "skipped_steps"],
)
def test_tensor_timesteps_step_with_the_coefficients_of_the_timestep_passed(device_timesteps, variance, sequence):
    # what each call must do: DDPMScheduler stepping the same timestep value, with the same generator state (for
    # "learned", where DDPMScheduler gives NaN, our own host path, checked against float64 formulas elsewhere)
    theirs, ours = _pair(beta_schedule="squaredcos_cap_v2", variance_type=variance)
    if variance == "learned":
        theirs = DDPMExtScheduler(beta_schedule="squaredcos_cap_v2", variance_type=variance)
    for s in (theirs, ours):
        s.set_timesteps(50)
    learned = variance in ("learned", "learned_range")
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for k, t in enumerate(sequence):
        out = _model_output((2, 3, 4, 4), learned, seed=k + 1)
        gen_a, gen_b = torch.Generator().manual_seed(k), torch.Generator().manual_seed(k)
        a = theirs.step(out, t, x, generator=gen_a)
        b = ours.step(out, torch.tensor(t), x, generator=gen_b)
        torch.testing.assert_close(b.pred_original_sample, a.pred_original_sample, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.prev_sample, a.prev_sample, rtol=2e-4, atol=2e-5)
        x = a.prev_sample


def test_tensor_timestep_path_equals_the_float_path_and_recomputed_float64_coefficients(device_timesteps):
    ours = DDPMExtScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    ours.set_timesteps(50)
    ac = ours._tables64["alphas_cumprod"]
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for t, prev in [(480, 460), (20, 0), (0, -1)]:
        a_t, a_prev = ac[t], (ac[prev] if prev >= 0 else 1.0)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        beta = 1 - a_t / a_prev
        # DDPM eq. 7 in float64, the noise of the step's own variance β̃ (none for the step into x_0)
        mean = math.sqrt(a_prev) * beta / (1 - a_t) * x0 + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t) * x
        z = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(7))
        expected = mean + (math.sqrt((1 - a_prev) / (1 - a_t) * beta) * z if prev >= 0 else 0)
        gathered = ours.step(eps, torch.tensor(t), x, generator=torch.Generator().manual_seed(7)).prev_sample
        host = ours.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        torch.testing.assert_close(gathered, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(host, expected, rtol=1e-12, atol=1e-12)


def test_tensor_timestep_path_ddim_matches_the_float_path(device_timesteps):
    ours = DDPMExtScheduler(num_train_timesteps=100)
    ours.set_timesteps(10)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    for t in (90, 50, 0):
        for eta in (0.0, 0.5):
            a = ours.step(eps, t, x, eta=eta, generator=torch.Generator().manual_seed(3)).prev_sample
            b = ours.step(eps, torch.tensor(t), x, eta=eta, generator=torch.Generator().manual_seed(3)).prev_sample
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_tensor_timestep_off_the_chain_gives_nan_not_another_steps_coefficients(device_timesteps):
    ours = DDPMExtScheduler()
    ours.set_timesteps(50)
    x = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    out = ours.step(torch.zeros_like(x), torch.tensor(479), x, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(out.prev_sample).all()
    with pytest.raises(ValueError, match="timestep 479 is not in the scheduler's current timesteps"):
        ours.step(torch.zeros_like(x), 479, x)  # readable on the host: refused, as before
    assert int(ours.previous_timestep(torch.tensor(480))) == 460 and ours.previous_timestep(480) == 460


def test_step_on_the_meta_device_never_reads_a_value():
    # a meta tensor has no data: reading the timestep's value (a host sync on CUDA) would raise here
    for variance in ("fixed_small", "learned_range"):
        ours = DDPMExtScheduler(variance_type=variance)
        ours.set_timesteps(50)
        channels = 6 if variance == "learned_range" else 3
        x = torch.empty(2, 3, 4, 4, device="meta")
        out = ours.step(torch.empty(2, channels, 4, 4, device="meta"), torch.tensor(480, device="meta"), x)
        assert out.prev_sample.device.type == "meta" and out.prev_sample.shape == x.shape
        assert ours.previous_timestep(torch.tensor(480, device="meta")).device.type == "meta"


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log",
                                           "learned", "learned_range"])
def test_get_variance_has_ddpm_schedulers_semantics(variance_type):
    theirs, ours = _pair(beta_schedule="squaredcos_cap_v2", variance_type=variance_type)
    predicted = torch.tanh(torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0)))
    for n in (None, 7):
        if n is not None:
            theirs.set_timesteps(n)
            ours.set_timesteps(n)
        for t in ([999, 487, 1, 0] if n is None else [int(t) for t in ours.timesteps]):
            a = theirs._get_variance(t, predicted_variance=predicted)
            b = ours._get_variance(t, predicted_variance=predicted)
            assert b.shape == a.shape and b.dtype == torch.float32
            # DDPMScheduler's float32 tables lose ~2e-4 relative at t = 1 (1 - ᾱ cancels); ours are float64
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-9)
    ac = np.cumprod(1 - DDPMScheduler(beta_schedule="squaredcos_cap_v2").betas.double().numpy())
    ours = DDPMExtScheduler(beta_schedule="squaredcos_cap_v2")
    expected = (1 - ac[0]) / (1 - ac[1]) * (1 - ac[1] / ac[0])  # float64 β̃ at t = 1
    assert abs(ours._get_variance(1, variance_type="fixed_small").item() / expected - 1) < 1e-6
    # the golden value of diffusers' own DDPMSchedulerTest.test_variance: posterior variance at t=487
    assert abs(DDPMExtScheduler()._get_variance(487).item() - 0.00979) < 1e-5
    with pytest.raises(ValueError, match="variance_type='nope' is not supported"):
        ours._get_variance(5, variance_type="nope")


# ---------------------------------------------------------------- the laplace schedule (Hang et al. 2024)
def test_laplace_schedule_is_the_laplace_log_snr_of_hang_et_al_and_matches_ddpm_scheduler():
    from ddpm_ext.schedulers.scheduling_ddpm_ext import _laplace_alpha_bar

    # λ(t) = log SNR(t) = -F⁻¹(t) for F the Laplace(0, 0.5) distribution, the value √(SNR / (1 + SNR))
    t = np.linspace(0.01, 0.99, 99)
    value = _laplace_alpha_bar(t)
    log_snr = np.log(value**2 / (1 - value**2))
    np.testing.assert_allclose(log_snr, -stats.laplace(loc=0.0, scale=0.5).ppf(t), rtol=0, atol=1e-4)
    assert _laplace_alpha_bar(np.array([0.5]))[0] == pytest.approx(math.sqrt(0.5))
    theirs, ours = _pair(beta_schedule="laplace")
    torch.testing.assert_close(ours.betas, theirs.betas, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=1e-5, atol=1e-7)
    for n in (None, 10):
        _run_parity(dict(beta_schedule="laplace", variance_type="learned_range"), n, batch=1, channels=1, size=2)


# ---------------------------------------------------------------- one vocabulary: step coefficients are table entries
def test_step_coefficients_over_the_full_chain_are_the_tables_entries_of_the_same_name():
    ours = DDPMExtScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=50)
    names = [f for f in ours._steps[0]._fields[2:] if f != "noise_scale"]
    assert "coef_x0" not in names and "std_small" not in names
    for t in (49, 20, 1, 0):
        c = ours._steps[t]
        for name in names:
            assert getattr(c, name) == pytest.approx(float(ours._tables64[name][t]), rel=1e-12), (t, name)


def test_step_and_p_mean_variance_share_x0_and_sigma_on_the_full_chain():
    # the same model output at the same (x_t, t): step's x̂_0 and mean equal p_mean_variance's; the noise it adds
    # has p_mean_variance's variance (recovered from two draws with the same generator seed)
    for variance in ("fixed_small", "fixed_large", "learned", "learned_range"):
        for prediction in ("epsilon", "sample", "v_prediction"):
            ours = DDPMExtScheduler(num_train_timesteps=50, variance_type=variance, prediction_type=prediction)
            learned = variance.startswith("learned")
            x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
            out = _model_output((2, 1, 4, 4), learned, seed=1).double()
            for t in (30, 1):
                mean, var, _, x0 = ours.p_mean_variance(out, x, torch.full((2,), t))
                step = ours.step(out, t, x, generator=torch.Generator().manual_seed(5))
                z = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(5))
                torch.testing.assert_close(step.pred_original_sample, x0, rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(step.prev_sample, mean + var.sqrt() * z, rtol=1e-10, atol=1e-10)
