import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from ddpm_ext.data import split_indices
from ddpm_ext.evaluation import (
    DigitsClassifierFeatures,
    InceptionFeatures,
    TransformersFeatures,
    frechet_distance,
    get_feature_extractor,
    images_to_unit_float,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ddpm_ext_cache"))


@pytest.fixture(scope="module")
def digits_features(cache_dir):
    return DigitsClassifierFeatures(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def digits_split():
    images, labels = DigitsClassifierFeatures.digits_tensors()
    train_idx, test_idx = split_indices(len(images), 0.1, seed=0)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


class _Projection(nn.Module):
    num_features = 6

    def __init__(self):
        super().__init__()
        weight = torch.randn(3 * 8 * 8, 6, generator=torch.Generator().manual_seed(1))
        self.register_buffer("weight", weight)

    def forward(self, images):
        return torch.tanh(images.flatten(1) @ self.weight / 8.0) + 0.5


def _reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_torchmetrics_fd_equals_scipy_sqrtm_reference_on_same_features():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(300, 3, 8, 8, generator=gen)
    fake = (torch.rand(200, 3, 8, 8, generator=gen) * 0.8 + 0.1) ** 2
    module = _Projection()
    expected = _reference_fd(module(real).double().numpy(), module(fake).double().numpy())
    got = frechet_distance(real, fake, features=module, float_range="[0,1]", batch_size=64)
    assert expected > 1e-3
    assert got == pytest.approx(expected, rel=1e-6)


def test_fd_of_a_set_with_itself_is_zero(digits_features, digits_split):
    _, _, test_images, _ = digits_split
    assert abs(frechet_distance(test_images, test_images, digits_features, float_range="[0,1]")) < 1e-6


def test_fd_grows_monotonically_with_noise_level(digits_features, digits_split):
    _, _, test_images, _ = digits_split
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(test_images.shape, generator=gen)
    distances = [
        frechet_distance(test_images, (test_images + s * noise).clamp(0, 1), digits_features, float_range="[0,1]")
        for s in (0.05, 0.1, 0.2, 0.4)
    ]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_digits_classifier_held_out_accuracy_above_90_percent(digits_features, digits_split):
    _, _, test_images, test_labels = digits_split
    accuracy = (digits_features.logits(test_images).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.9


def test_real_vs_noise_fd_much_larger_than_real_vs_held_out(digits_features, digits_split):
    train_images, _, test_images, _ = digits_split
    noise = torch.rand(test_images.shape, generator=torch.Generator().manual_seed(0))
    held_out = frechet_distance(train_images, test_images, digits_features, float_range="[0,1]")
    versus_noise = frechet_distance(train_images, noise, digits_features, float_range="[0,1]")
    assert versus_noise > 10 * held_out


def test_digits_classifier_loads_from_cache_without_training(digits_features, cache_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(DigitsClassifierFeatures, "_train", fail)
    again = DigitsClassifierFeatures(cache_dir=cache_dir)
    for key, value in digits_features.net.state_dict().items():
        assert torch.equal(again.net.state_dict()[key], value)


def test_digits_features_accept_rgb_and_16x16_input(digits_features, digits_split):
    _, _, test_images, _ = digits_split
    up = test_images[:5].repeat_interleave(2, -1).repeat_interleave(2, -2).expand(-1, 3, -1, -1)
    torch.testing.assert_close(digits_features(up), digits_features(test_images[:5]), atol=1e-5, rtol=1e-5)
    assert digits_features(up).shape == (5, DigitsClassifierFeatures.num_features)


def test_tiny_random_dinov2_on_1_channel_16x16_returns_hidden_size():
    from transformers import Dinov2Config

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    extractor = TransformersFeatures(config)
    gray = torch.rand(4, 1, 16, 16)
    features = extractor(gray)
    assert features.shape == (4, 32) and extractor.num_features == 32
    torch.testing.assert_close(features, extractor(gray.expand(-1, 3, -1, -1)))


def test_input_forms_uint8_and_minus1_1_float_give_same_fd(digits_features, digits_split):
    train_images, _, test_images, _ = digits_split
    def as_uint8(x):
        return (x * 255).round().to(torch.uint8)
    from_uint8 = frechet_distance(as_uint8(train_images), as_uint8(test_images), digits_features)
    from_float = frechet_distance(train_images * 2 - 1, test_images * 2 - 1, digits_features, float_range="[-1,1]")
    assert from_uint8 == pytest.approx(from_float, rel=1e-5)


def test_images_to_unit_float_ranges_and_layouts():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(2, 1, 4, 3)
    torch.testing.assert_close(images_to_unit_float(x)[0, 0, 0], torch.tensor([0.0, 0.5, 1.0]))
    channels_last = np.zeros((2, 5, 5, 3), dtype=np.uint8) + 51
    out = images_to_unit_float(channels_last)
    assert out.shape == (2, 3, 5, 5) and torch.allclose(out, torch.full_like(out, 0.2))
    with pytest.raises(ValueError, match="outside float_range"):
        images_to_unit_float(torch.full((2, 1, 4, 4), -0.5), float_range="[0,1]")
    with pytest.raises(ValueError, match="float_range='0-1'"):
        images_to_unit_float(x, float_range="0-1")


def test_unknown_feature_spec_raises_value_error():
    with pytest.raises(ValueError, match="unknown feature extractor 'nope'"):
        get_feature_extractor("nope")


def test_inception_features_shape_when_weights_installed():
    try:
        extractor = InceptionFeatures()
    except ValueError as err:
        pytest.skip(str(err))
    features = extractor(torch.rand(2, 1, 16, 16))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_evaluation_shows_a_progress_bar_per_step_count_and_for_bits_per_dim(capsys):
    """`ddpm-ext evaluate --nll` ran silently for half an hour (issue 18): each step count's sampling and the
    bits/dim pass now draw a bar (stderr) whose total is the work to do, and the images are unchanged by it."""
    from _models import tiny_unet

    from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
    from ddpm_ext.evaluation import evaluate_pipeline, sample_images

    pipe = DDPMExtPipeline(tiny_unet(3, 6), DDPMExtScheduler(num_train_timesteps=20, variance_type="learned_range"))
    pipe.set_progress_bar_config(disable=True)
    real = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)  # _Projection takes 3 × 8 × 8
    nll = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    capsys.readouterr()
    results = evaluate_pipeline(
        pipe, real, [2, 5], 3, features=_Projection(), batch_size=2, nll_images=nll, nll_timestep_batch_size=5,
        progress=True,
    )
    err = capsys.readouterr().err
    assert "sampling 3 images, 2 steps" in err and "4/4" in err  # 2 batches × 2 steps
    assert "sampling 3 images, 5 steps" in err and "10/10" in err
    assert "bits/dim on 2 images, 20 terms" in err and "4/4" in err.split("bits/dim")[-1]  # 20 terms / 5 per call
    assert results["bits_per_dim"]["num_images"] == 2
    assert pipe._progress_bar_config == {"disable": True}  # the caller's setting is restored
    quiet = sample_images(pipe, 3, 2, batch_size=2)
    assert capsys.readouterr().err == ""
    assert torch.equal(quiet, sample_images(pipe, 3, 2, batch_size=2, progress=True))
