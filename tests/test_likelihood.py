"""The variational bound's terms (DDPMExtScheduler.normal_kl, discretized_gaussian_log_likelihood, prior_bpd,
vb_terms_bpd) against float64 formulas, scipy, torch.distributions and a closed-form bound for Gaussian data."""

import math

import numpy as np
import torch
from scipy import stats
from scipy.special import log_ndtr

from ddpm_ext import DDPMExtScheduler

GRID = np.arange(256) / 127.5 - 1.0


# ---------------------------------------------------------------- Gaussian KL
def _random_gaussians(seed, n=4096):
    g = torch.Generator().manual_seed(seed)
    mean1 = torch.randn(n, generator=g, dtype=torch.float64) * 3
    mean2 = torch.randn(n, generator=g, dtype=torch.float64) * 3
    log_var1 = torch.empty(n, dtype=torch.float64).uniform_(-8, 3, generator=g)
    log_var2 = torch.empty(n, dtype=torch.float64).uniform_(-8, 3, generator=g)
    return mean1, log_var1, mean2, log_var2


def test_normal_kl_of_a_distribution_with_itself_is_zero():
    mean, log_var, _, _ = _random_gaussians(0)
    kl = DDPMExtScheduler.normal_kl(mean, log_var, mean, log_var)
    assert kl.abs().max() <= 4 * torch.finfo(torch.float64).eps  # float64 rounding of -1 + log σ² - log σ² + 1


def test_normal_kl_is_nonnegative_on_random_gaussians():
    for dtype in (torch.float32, torch.float64):
        kl = DDPMExtScheduler.normal_kl(*(x.to(dtype) for x in _random_gaussians(1)))
        assert (kl >= 0).all()


def test_normal_kl_matches_torch_distributions_kl_divergence_in_float64():
    mean1, log_var1, mean2, log_var2 = _random_gaussians(2)
    p = torch.distributions.Normal(mean1, torch.exp(0.5 * log_var1))
    q = torch.distributions.Normal(mean2, torch.exp(0.5 * log_var2))
    expected = torch.distributions.kl_divergence(p, q)
    ours = DDPMExtScheduler.normal_kl(mean1, log_var1, mean2, log_var2)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- discretized Gaussian decoder
def _decoder_grid(seed, n=200):
    """Log-likelihood of every grid value [n, 256] under n random Gaussians: means in [-1.5, 1.5], log σ in [-8, 1]."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-1.5, 1.5, n)
    means[:4] = [GRID[100], GRID[100] + 1 / 255, -1.0, 1.0]  # on a bin centre, on a bin edge, on both ends
    log_scales = rng.uniform(-8.0, 1.0, n)
    x = torch.from_numpy(np.broadcast_to(GRID, (n, 256)).copy())
    ll = DDPMExtScheduler.discretized_gaussian_log_likelihood(
        x, torch.from_numpy(means)[:, None].expand(n, 256), torch.from_numpy(log_scales)[:, None].expand(n, 256)
    )
    return means, log_scales, ll.numpy()


def test_decoder_probabilities_over_the_256_bins_sum_to_one():
    _, _, ll = _decoder_grid(3)
    assert not np.isnan(ll).any() and (ll <= 0).all()
    np.testing.assert_allclose(np.exp(ll).sum(axis=1), 1.0, rtol=0, atol=1e-9)


def test_decoder_matches_scipy_norm_cdf_difference_on_interior_bins():
    means, log_scales, ll = _decoder_grid(4)
    sigma = np.exp(log_scales)[:, None]
    upper = (GRID[None, 1:-1] + 1 / 255 - means[:, None]) / sigma
    lower = (GRID[None, 1:-1] - 1 / 255 - means[:, None]) / sigma
    # the difference of CDFs on the side where it does not cancel
    n = stats.norm
    prob = np.where(upper < 0, n.cdf(upper) - n.cdf(lower), n.sf(lower) - n.sf(upper))
    ours = ll[:, 1:-1]
    big = prob > 1e-250
    assert big.sum() > 1000
    np.testing.assert_allclose(ours[big], np.log(prob[big]), rtol=1e-7, atol=1e-9)
    assert (ours[~big] < math.log(1e-240)).all()


def test_decoder_edge_bins_extend_to_infinity():
    means, log_scales, ll = _decoder_grid(5)
    sigma = np.exp(log_scales)
    np.testing.assert_allclose(ll[:, 0], log_ndtr((GRID[0] + 1 / 255 - means) / sigma), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ll[:, -1], log_ndtr(-(GRID[-1] - 1 / 255 - means) / sigma), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- the whole bound, closed form vs Monte Carlo
T_CF, BETA_START, BETA_END, DATA_STD = 200, 1e-4, 0.05, 0.4


def _quantize(x):
    return np.clip(np.round((x + 1.0) * 127.5) / 127.5 - 1.0, -1.0, 1.0)


def _log_bin_probability(x0, mean, std):
    """log P(x0) under N(mean, std²) discretized to the 256 bins on [-1, 1], edges to ±∞ (numpy float64)."""
    upper = (x0 - mean + 1 / 255) / std
    lower = (x0 - mean - 1 / 255) / std
    if x0 < -0.999:
        return log_ndtr(upper)
    if x0 > 0.999:
        return log_ndtr(-lower)
    with np.errstate(divide="ignore"):
        left = log_ndtr(upper) + np.log1p(-np.exp(log_ndtr(lower) - log_ndtr(upper)))
        right = log_ndtr(-lower) + np.log1p(-np.exp(log_ndtr(-upper) - log_ndtr(-lower)))
    return np.where(upper < 0, left, right)


def _closed_form_bound_bpd(x0: np.ndarray) -> float:
    """E over x_{1:T} ~ q of the bound (bits/dim) of the linear Gaussian-optimal ε-model, given the data x0.

    Tables by DDPM eq. 4, 7 in numpy float64. With ε*(x_t) = √(1-ᾱ_t) x_t / (ᾱ_t s² + 1 - ᾱ_t), x̂_0 = g_t x_t
    with g_t = √ᾱ_t s² / (ᾱ_t s² + 1 - ᾱ_t), so μ̃_t - μ_θ = c1_t (x_0 - g_t x_t) and, with x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε,
    E[(μ̃_t - μ_θ)²] = c1_t² ((1 - g_t √ᾱ_t)² E[x_0²] + g_t² (1 - ᾱ_t)); both variances are β̃_t (fixed_small), so
    the KL is that over 2 β̃_t. E[x_0²] is the empirical second moment of the quantized data used. The prior is exact;
    the decoder's expectation over x_1 is a 120-node Gauss-Hermite quadrature per grid value, with the decoder's
    std √β̃ of the second step (the clipped log-variance convention of IDDPM).
    """
    betas = np.linspace(BETA_START, BETA_END, T_CF)
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
    c1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
    s2 = DATA_STD**2
    g = np.sqrt(ac) * s2 / (ac * s2 + 1.0 - ac)
    m2 = float(np.mean(x0**2))
    sq_err = c1[1:] ** 2 * ((1.0 - g[1:] * np.sqrt(ac[1:])) ** 2 * m2 + g[1:] ** 2 * (1.0 - ac[1:]))
    kl_terms = sq_err / (2.0 * posterior_variance[1:])
    prior = 0.5 * (-1.0 - math.log(1.0 - ac[-1]) + (1.0 - ac[-1]) + ac[-1] * m2)
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / weights.sum()
    decoder_std = math.sqrt(posterior_variance[1])
    values, counts = np.unique(x0, return_counts=True)
    decoder = 0.0
    for v, count in zip(values, counts):
        x1 = math.sqrt(ac[0]) * v + math.sqrt(1.0 - ac[0]) * nodes
        decoder -= count * np.sum(weights * _log_bin_probability(v, g[0] * x1, decoder_std))
    decoder /= x0.size
    return (prior + kl_terms.sum() + decoder) / math.log(2.0)


def _quantized_gaussian_entropy_bpd() -> float:
    upper = np.append((GRID[:-1] + 1 / 255) / DATA_STD, np.inf)
    lower = np.append(-np.inf, (GRID[1:] - 1 / 255) / DATA_STD)
    p = stats.norm.cdf(upper) - stats.norm.cdf(lower)
    return float(-(p * np.log2(p)).sum())



def test_monte_carlo_bound_matches_closed_form_for_gaussian_data_and_stays_above_entropy(one_thread):
    """Data: 256 images of 1×8×8 i.i.d. N(0, 0.4²) pixels quantized to the 256-level grid on [-1, 1]; model: the exact
    optimal ε-predictor for continuous Gaussian data (linear in x_t); linear β 1e-4..0.05, T = 200, fixed_small.
    `clip_denoised=False` everywhere, because clipping x̂_0 would make μ_θ non-linear and lose the closed form.

    Monte Carlo: prior_bpd + Σ_t vb_terms_bpd with one x_t ~ q(x_t | x_0) per t and image. It must agree with the
    closed form within 4 standard errors (standard error = sample std of the per-image totals / √N), and neither may
    fall below the data's discrete entropy (exact, from the bin probabilities): the bound is an upper bound on the NLL.
    """
    n = 256
    rng = np.random.default_rng(0)
    x0 = _quantize(rng.normal(0.0, DATA_STD, (n, 1, 8, 8)))
    closed_form = _closed_form_bound_bpd(x0)
    entropy = _quantized_gaussian_entropy_bpd()

    sched = DDPMExtScheduler(
        num_train_timesteps=T_CF, beta_start=BETA_START, beta_end=BETA_END,
        variance_type="fixed_small", clip_sample=False,
    )
    ac = np.cumprod(1.0 - np.linspace(BETA_START, BETA_END, T_CF))
    x0_t = torch.from_numpy(x0)
    gen = torch.Generator().manual_seed(1)
    totals = sched.prior_bpd(x0_t).double()
    for t in range(T_CF):
        timesteps = torch.full((n,), t)
        x_t = sched.add_noise(x0_t, torch.randn(x0_t.shape, generator=gen, dtype=torch.float64), timesteps)
        eps_star = math.sqrt(1.0 - ac[t]) * x_t / (ac[t] * DATA_STD**2 + 1.0 - ac[t])
        totals += sched.vb_terms_bpd(eps_star, x0_t, x_t, timesteps, clip_denoised=False)["output"]
    estimate = totals.mean().item()
    std_error = totals.std().item() / math.sqrt(n)
    print(
        f"\nbits/dim: closed form {closed_form:.4f}, Monte Carlo {estimate:.4f} ± {std_error:.4f} (1 s.e.),"
        f" data entropy {entropy:.4f}"
    )
    assert abs(estimate - closed_form) < 4 * std_error
    assert estimate > entropy
    assert closed_form > entropy
