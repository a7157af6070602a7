"""ddpm_ext.losses and ddpm_ext.resample against hand computations in float64 numpy, and a short training run."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _models import tiny_unet
from scipy import stats

from ddpm_ext import DDPMExtScheduler
from ddpm_ext.losses import min_snr_loss_weights, training_losses
from ddpm_ext.resample import LossSecondMomentResampler, UniformSampler, create_sampler

T, BETA_START, BETA_END = 50, 1e-4, 0.2
PREDICTIONS = ["epsilon", "sample", "v_prediction"]


def _tables():
    """DDPM eq. 4, 7 in float64 numpy, independent of the scheduler."""
    betas = np.linspace(BETA_START, BETA_END, T)
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    pv = betas * (1.0 - ac_prev) / (1.0 - ac)
    return {
        "betas": betas,
        "ac": ac,
        "log_pv_clipped": np.log(np.append(pv[1], pv[1:])),
        "c1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "c2": (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
    }


def _scheduler(prediction_type="epsilon", variance_type="learned_range", **kw):
    return DDPMExtScheduler(
        num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END,
        prediction_type=prediction_type, variance_type=variance_type, **kw,
    )


def _batch(prediction_type, learned=True, seed=0, b=8):
    """Grid-valued x0 in [-1, 1], noise, timesteps (0 and T-1 included) and a network output near its target."""
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.round((torch.rand(b, 2, 4, 4, generator=g, dtype=torch.float64) * 2) * 127.5) / 127.5 - 1.0)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (b,), generator=g)
    t[0], t[1] = 0, T - 1
    target = _target(prediction_type, x0, noise, t)
    scale = 0.01 if prediction_type == "sample" else 0.5  # keep the decoder's bin probabilities representable
    out = target + scale * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    if learned:
        out = torch.cat([out, torch.rand(x0.shape, generator=g, dtype=torch.float64) * 2 - 1], dim=1)
    return x0, noise, t, out


def _target(prediction_type, x0, noise, t):
    ac = torch.from_numpy(_tables()["ac"])[t].reshape(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    return ac.sqrt() * noise - (1 - ac).sqrt() * x0


def _hand_vlb_bpd(prediction_type, x0, noise, t, out):
    """L_t by hand (learned_range, no clipping): the Gaussian KL for t > 0, the scipy-discretized decoder at t = 0."""
    tab = _tables()
    x0, noise, out, t = x0.numpy(), noise.numpy(), out.numpy(), t.numpy()
    c = x0.shape[1]
    pred, v = out[:, :c], out[:, c:]
    col = lambda a: a[t].reshape(-1, 1, 1, 1)  # noqa: E731
    ac = col(tab["ac"])
    x_t = np.sqrt(ac) * x0 + np.sqrt(1 - ac) * noise
    if prediction_type == "epsilon":
        x0_hat = (x_t - np.sqrt(1 - ac) * pred) / np.sqrt(ac)
    elif prediction_type == "sample":
        x0_hat = pred
    else:
        x0_hat = np.sqrt(ac) * x_t - np.sqrt(1 - ac) * pred
    mean_model = col(tab["c1"]) * x0_hat + col(tab["c2"]) * x_t
    mean_true = col(tab["c1"]) * x0 + col(tab["c2"]) * x_t
    frac = (v + 1) / 2  # IDDPM eq. 15
    log_var = frac * col(np.log(tab["betas"])) + (1 - frac) * col(tab["log_pv_clipped"])
    log_var_true = col(tab["log_pv_clipped"])
    sq = (mean_true - mean_model) ** 2
    kl = 0.5 * (-1 + log_var - log_var_true + np.exp(log_var_true - log_var) + sq / np.exp(log_var))
    std = np.exp(0.5 * log_var)
    upper, lower = (x0 + 1 / 255 - mean_model) / std, (x0 - 1 / 255 - mean_model) / std
    n = stats.norm
    prob = np.where(upper < 0, n.cdf(upper) - n.cdf(lower), n.sf(lower) - n.sf(upper))
    prob = np.where(x0 < -0.999, stats.norm.cdf(upper), np.where(x0 > 0.999, stats.norm.sf(lower), prob))
    nll = -np.log(prob)
    per_sample = np.where(t == 0, nll.mean(axis=(1, 2, 3)), kl.mean(axis=(1, 2, 3)))
    return per_sample / math.log(2)


# ---------------------------------------------------------------- L_simple and min-SNR
@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_simple_loss_equals_mse_against_hand_computed_target(prediction_type, variance_type):
    learned = variance_type == "learned_range"
    x0, noise, t, out = _batch(prediction_type, learned=learned)
    out = out.float() + 0.1  # away from the target
    losses = training_losses(_scheduler(prediction_type, variance_type), out, x0.float(), noise.float(), t)
    target = _target(prediction_type, x0, noise, t).float()
    expected = F.mse_loss(out[:, :2], target, reduction="none").mean(dim=(1, 2, 3))
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["mse"], expected, rtol=1e-5, atol=1e-6)
    assert "vlb" not in losses


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_min_snr_weights_equal_hand_formula(prediction_type):
    gamma = 5.0
    t = torch.arange(T)
    snr = _tables()["ac"] / (1 - _tables()["ac"])
    expected = {
        "epsilon": np.minimum(snr, gamma) / snr,
        "sample": np.minimum(snr, gamma),
        "v_prediction": np.minimum(snr, gamma) / (snr + 1),
    }[prediction_type]
    sched = _scheduler(prediction_type)
    # rtol 1e-3: compute_snr reads the float32 ᾱ, whose 1 - ᾱ_1 ≈ 1e-4 carries a ~1e-4 relative rounding error
    np.testing.assert_allclose(min_snr_loss_weights(sched, t, gamma).numpy(), expected, rtol=1e-3)
    x0, noise, ts, out = _batch(prediction_type)
    losses = training_losses(sched, out.float(), x0.float(), noise.float(), ts, snr_gamma=gamma)
    weights = torch.from_numpy(expected[ts.numpy()]).float()
    torch.testing.assert_close(losses["loss"], losses["mse"] * weights, rtol=1e-3, atol=0)


def test_min_snr_epsilon_weight_is_one_at_zero_terminal_snr():
    sched = _scheduler("epsilon", rescale_betas_zero_snr=True)
    assert sched.alphas_cumprod[-1] == 0
    w = min_snr_loss_weights(sched, torch.tensor([T - 1, T - 2]), 5.0)
    assert w[0] == 1.0 and torch.isfinite(w).all()


# ---------------------------------------------------------------- the hybrid loss and L_vlb
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_hybrid_vlb_term_equals_hand_computed_bound_term(prediction_type):
    x0, noise, t, out = _batch(prediction_type, seed=1)
    losses = training_losses(_scheduler(prediction_type), out, x0, noise, t, loss_type="hybrid")
    expected = _hand_vlb_bpd(prediction_type, x0, noise, t, out)
    np.testing.assert_allclose(losses["vlb"].numpy(), expected, rtol=1e-5)
    torch.testing.assert_close(losses["loss"], losses["mse"] + 0.001 * T * losses["vlb"])


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_hybrid_gradients_vlb_reaches_only_variance_channels_and_mse_only_prediction_channels(prediction_type):
    x0, noise, t, out = _batch(prediction_type, seed=2)
    out = out.float().requires_grad_(True)
    losses = training_losses(_scheduler(prediction_type), out, x0.float(), noise.float(), t, loss_type="hybrid")
    (grad_vlb,) = torch.autograd.grad(0.001 * T * losses["vlb"].sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(losses["mse"].sum(), out)
    assert torch.equal(grad_vlb[:, :2], torch.zeros_like(grad_vlb[:, :2]))
    assert (grad_vlb[:, 2:].abs().sum(dim=(1, 2, 3)) > 0).all()
    assert torch.equal(grad_mse[:, 2:], torch.zeros_like(grad_mse[:, 2:]))
    assert (grad_mse[:, :2].abs().sum(dim=(1, 2, 3)) > 0).all()


def test_vlb_loss_is_T_times_the_term_and_trains_prediction_and_variance_channels():
    x0, noise, t, out = _batch("epsilon", seed=3)
    out = out.requires_grad_(True)
    sched = _scheduler("epsilon")
    losses = training_losses(sched, out, x0, noise, t, loss_type="vlb")
    expected = _hand_vlb_bpd("epsilon", x0, noise, t, out.detach())
    np.testing.assert_allclose(losses["vlb"].detach().numpy(), expected, rtol=1e-5)
    torch.testing.assert_close(losses["loss"], T * losses["vlb"])
    assert "mse" not in losses
    (grad,) = torch.autograd.grad(losses["loss"].sum(), out)
    assert grad[:, :2].abs().sum() > 0 and grad[:, 2:].abs().sum() > 0


def test_hybrid_with_fixed_variance_adds_the_bound_but_no_gradient():
    x0, noise, t, out = _batch("epsilon", learned=False, seed=4)
    out = out.requires_grad_(True)
    sched = _scheduler("epsilon", "fixed_small")
    hybrid = training_losses(sched, out, x0, noise, t, loss_type="hybrid")
    simple = training_losses(sched, out, x0, noise, t, loss_type="simple")
    assert (hybrid["vlb"] > 0).all()
    (g_hybrid,) = torch.autograd.grad(hybrid["loss"].sum(), out)
    (g_simple,) = torch.autograd.grad(simple["loss"].sum(), out)
    torch.testing.assert_close(g_hybrid, g_simple, rtol=0, atol=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(loss_type="kl"), "loss_type='kl'"),
        (dict(out_channels=2), "needs 4"),
        (dict(noise_shape=(8, 2, 4, 5)), "noise has shape"),
        (dict(timesteps=torch.zeros(8, 1, dtype=torch.long)), "timesteps must be a tensor of shape"),
        (dict(loss_type="vlb", snr_gamma=5.0), "snr_gamma"),
        (dict(snr_gamma=0.0), "snr_gamma must be a number > 0"),
        (dict(vlb_weight=-1.0), "vlb_weight"),
        (dict(loss_type="hybrid", x0_scale=255.0), "must lie in \\[-1, 1\\]"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_problem(change, message):
    x0, noise, t, out = _batch("epsilon")
    change = dict(change)
    if "out_channels" in change:
        out = out[:, : change.pop("out_channels")]
    if "noise_shape" in change:
        noise = torch.zeros(change.pop("noise_shape"), dtype=noise.dtype)
    t = change.pop("timesteps", t)
    x0 = x0 * change.pop("x0_scale", 1.0)
    with pytest.raises(ValueError, match=message):
        training_losses(_scheduler("epsilon"), out, x0, noise, t, **change)


# ---------------------------------------------------------------- timestep samplers
def _feed(sampler, per_t, seed):
    """Give every timestep `per_t` losses (scale growing with t); return the history as plain lists."""
    rng = np.random.default_rng(seed)
    history = {t: [] for t in range(sampler.num_timesteps)}
    for _ in range(per_t):
        ts = rng.permutation(sampler.num_timesteps)
        losses = rng.exponential(1.0 + ts)
        sampler.update_with_local_losses(torch.from_numpy(ts), torch.from_numpy(losses))
        for t, loss in zip(ts, losses):
            history[int(t)].append(float(loss))
    return history


def test_importance_sampler_is_uniform_until_every_timestep_has_its_history():
    sampler = LossSecondMomentResampler(20, history_per_term=10)
    _feed(sampler, 9, seed=0)
    sampler.update_with_local_losses(torch.arange(19), torch.ones(19))  # all but t = 19 have 10
    assert not sampler.warmed_up()
    np.testing.assert_array_equal(sampler.weights(), np.full(20, 1 / 20))
    sampler.update_with_local_losses(torch.tensor([19]), torch.ones(1))
    assert sampler.warmed_up()
    assert not np.allclose(sampler.weights(), 1 / 20)


def test_importance_probabilities_follow_root_mean_square_of_last_ten_losses_mixed_with_uniform():
    sampler = LossSecondMomentResampler(20, history_per_term=10, uniform_prob=0.05)
    history = _feed(sampler, 14, seed=1)
    rms = np.array([math.sqrt(np.mean(np.square(history[t][-10:]))) for t in range(20)])
    expected = 0.95 * rms / rms.sum() + 0.05 / 20
    np.testing.assert_allclose(sampler.weights(), expected, rtol=1e-12)
    assert math.isclose(sampler.weights().sum(), 1.0, rel_tol=1e-12)


def test_importance_samples_follow_probabilities_and_weights_are_inverse_T_p():
    sampler = LossSecondMomentResampler(20)
    _feed(sampler, 10, seed=2)
    p = sampler.weights()
    t, w = sampler.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and w.dtype == torch.float32
    torch.testing.assert_close(w, torch.from_numpy(1.0 / (20 * p[t.numpy()])).float())
    counts = np.bincount(t.numpy(), minlength=20)
    assert stats.chisquare(counts, 200_000 * p).pvalue > 1e-4


def test_uniform_sampler_draws_like_torch_randint_with_unit_weights():
    t, w = UniformSampler(37).sample(64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(t, torch.randint(0, 37, (64,), generator=torch.Generator().manual_seed(5)))
    assert torch.equal(w, torch.ones(64))
    np.testing.assert_allclose(UniformSampler(37).weights().sum(), 1.0)


def test_importance_sampler_state_dict_round_trip_restores_identical_sampling(tmp_path):
    a = LossSecondMomentResampler(20)
    _feed(a, 13, seed=3)
    torch.save(a.state_dict(), tmp_path / "sampler.pt")
    b = LossSecondMomentResampler(20)
    b.load_state_dict(torch.load(tmp_path / "sampler.pt", weights_only=True))
    for _ in range(2):  # sampling, then further updates land in the same history slots
        ta, wa = a.sample(32, generator=torch.Generator().manual_seed(7))
        tb, wb = b.sample(32, generator=torch.Generator().manual_seed(7))
        assert torch.equal(ta, tb) and torch.equal(wa, wb)
        a.update_with_local_losses(ta, torch.arange(32.0))
        b.update_with_local_losses(tb, torch.arange(32.0))
        np.testing.assert_array_equal(a.weights(), b.weights())
    with pytest.raises(ValueError, match="num_timesteps=20"):
        LossSecondMomentResampler(30).load_state_dict(a.state_dict())


def test_create_sampler_builds_by_name_and_rejects_unknown_names():
    assert isinstance(create_sampler("uniform", 10), UniformSampler)
    assert isinstance(create_sampler("importance", 10), LossSecondMomentResampler)
    with pytest.raises(ValueError, match="'loss-second-moment'.*uniform, importance"):
        create_sampler("loss-second-moment", 10)
    with pytest.raises(ValueError, match="finite"):
        LossSecondMomentResampler(10).update_with_local_losses(torch.tensor([1]), torch.tensor([float("nan")]))


# ---------------------------------------------------------------- a short training run lowers bits/dim
def _digits():
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float64)
    x = np.round(images * 255.0 / 16.0) / 127.5 - 1.0  # onto the 256-level grid on [-1, 1]
    return torch.from_numpy(x).float().unsqueeze(1)


@torch.no_grad()
def _bits_per_dim(model, sched, x0, seed=0):
    """prior_bpd + Σ_t vb_terms_bpd, one x_t ~ q(x_t | x_0) per t, mean over images."""
    g = torch.Generator().manual_seed(seed)
    total = sched.prior_bpd(x0)
    for t in range(sched.config.num_train_timesteps):
        ts = torch.full((x0.shape[0],), t)
        x_t = sched.add_noise(x0, torch.randn(x0.shape, generator=g), ts)
        total = total + sched.vb_terms_bpd(model(x_t, ts).sample, x0, x_t, ts)["output"]
    return total.mean().item()



def test_short_hybrid_training_on_digits_lowers_held_out_bits_per_dim(one_thread):
    model = tiny_unet(in_channels=1, out_channels=2, block_out_channels=(16, 32), norm_num_groups=8)
    sched = DDPMExtScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", variance_type="learned_range")
    data = _digits()
    train, held_out = data[:-64], data[-64:]
    before = _bits_per_dim(model, sched, held_out)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sampler = UniformSampler(100)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        x0 = train[torch.randint(0, train.shape[0], (64,), generator=g)]
        t, weights = sampler.sample(64, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        out = model(sched.add_noise(x0, noise, t), t).sample
        loss = (training_losses(sched, out, x0, noise, t, loss_type="hybrid")["loss"] * weights).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _bits_per_dim(model, sched, held_out)
    print(f"\nheld-out digits bits/dim: before {before:.3f}, after 200 hybrid steps {after:.3f}")
    assert after < before
