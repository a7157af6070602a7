"""ddpm_ext.reporting: the one image-grid helper (cli, training, benchmarks) and the one model-card writer."""

import math

import numpy as np
import pytest
import torch
from _models import tiny_unet
from huggingface_hub import ModelCard
from PIL import Image

from ddpm_ext import DDPMExtScheduler
from ddpm_ext.reporting import image_grid, model_card, save_image_grid


def _grid_reference(images: np.ndarray, border: int) -> np.ndarray:
    """The grid drawn by hand, pixel by pixel: [N, H, W, C] uint8, ⌈√N⌉ columns, `border` white pixels."""
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + border) + border, cols * (w + border) + border, c), 255 if border else 0, np.uint8)
    for i in range(n):
        y, x = border + (i // cols) * (h + border), border + (i % cols) * (w + border)
        out[y : y + h, x : x + w] = images[i]
    return out


@pytest.mark.parametrize("n, c", [(1, 1), (5, 3), (10, 1)])
@pytest.mark.parametrize("border", [0, 1])
def test_image_grid_places_each_image_row_major_with_the_border(n, c, border):
    u8 = np.random.default_rng(n).integers(0, 256, size=(n, 4, 6, c), dtype=np.uint8)
    expected = _grid_reference(u8, border)
    expected = expected[..., 0] if c == 1 else expected

    np.testing.assert_array_equal(image_grid(u8, border=border), expected)
    as_float = u8.astype(np.float32) / 255  # output_type="np"
    np.testing.assert_array_equal(image_grid(as_float, border=border), expected)
    as_tensor = torch.from_numpy(as_float).permute(0, 3, 1, 2)  # output_type="pt"
    np.testing.assert_array_equal(image_grid(as_tensor, border=border), expected)


def test_image_grid_upscales_small_grids_by_an_integer_factor_and_clips_float_input():
    images = np.zeros((4, 8, 8, 1), np.float32)
    images[0] = 2.0  # out of range: clipped to white, not wrapped around
    grid = image_grid(images, border=1, min_size=256)
    assert grid.shape == (19 * 13, 19 * 13)  # 2×2 cells of 8 + 3 border pixels = 19, 256 // 19 = 13
    assert grid[13, 13] == 255 and grid[13 * 10, 13 * 10] == 0


@pytest.mark.parametrize("bad, match", [(np.zeros((0, 4, 4, 3)), "non-empty"), (np.zeros((4, 4, 3)), "shape")])
def test_image_grid_refuses_what_is_not_a_batch(bad, match):
    with pytest.raises(ValueError, match=match):
        image_grid(bad)


def test_image_grid_refuses_a_negative_border():
    with pytest.raises(ValueError, match="border must be an integer >= 0, got -1"):
        image_grid(np.zeros((1, 4, 4, 3), np.uint8), border=-1)


def test_save_image_grid_writes_the_grid_as_png(tmp_path):
    images = torch.rand(3, 3, 8, 8)
    path = save_image_grid(images, str(tmp_path / "sub" / "grid.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image_grid(images, border=1, min_size=256))


def test_model_card_names_the_repo_the_settings_and_both_ways_to_load():
    unet = tiny_unet()
    scheduler = DDPMExtScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2")
    card = ModelCard(str(model_card("me/tiny", unet, scheduler.config)))

    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.tags[:4] == ["ddpm-ext", "diffusers", "unconditional-image-generation", "ddpm"]
    assert 'DDPMExtPipeline.from_pretrained("me/tiny")' in card.text
    assert 'DiffusionPipeline.from_pretrained("me/tiny", trust_remote_code=True)' in card.text
    assert "| beta_schedule | squaredcos_cap_v2 |" in card.text and "| num_train_timesteps | 20 |" in card.text
    params = sum(p.numel() for p in unet.parameters())
    assert f"({params / 1e6:.2f}M parameters" in card.text
    assert "sample_grid.png" not in card.text and "## Final metrics" not in card.text


def test_model_card_of_a_training_run_carries_metrics_config_and_samples():
    card = model_card("me/run", tiny_unet(), {"num_train_timesteps": 8}, num_inference_steps=7, sample_grid=True,
                      metrics={"global_step": 3}, training_config={"max_train_steps": 3, "betas": (1, 2)},
                      tags=("pytorch", "ddpm"), license="apache-2.0")
    card = ModelCard(str(card))

    assert card.data.ddpm_ext_metrics == {"global_step": 3}
    assert card.data.ddpm_ext_training_config == {"max_train_steps": 3, "betas": [1, 2]}
    assert card.data.license == "apache-2.0" and card.data.tags.count("ddpm") == 1 and "pytorch" in card.data.tags
    assert "![samples](sample_grid.png)" in card.text and "num_inference_steps=7" in card.text
    assert "| global_step | 3 |" in card.text and '"max_train_steps": 3' in card.text
