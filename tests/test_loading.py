"""Every route that loads a saved ddpm-ext pipeline, each in a fresh Python process, plus bad folders.

Reference images are sampled in the test process and written to .npy; each subprocess loads the folder its own
way, samples with the same seed and compares.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _models import tiny_unet
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, DiffusionPipeline

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler

BLOCK_PLUGIN = """
import sys

class _NoPlugin:
    def find_spec(self, name, path=None, target=None):
        if name == "ddpm_ext" or name.startswith("ddpm_ext."):
            raise ImportError("ddpm_ext is blocked: this process stands for a machine without the plugin")
        return None

sys.meta_path.insert(0, _NoPlugin())
try:
    import ddpm_ext  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("ddpm_ext was importable")
"""

SAMPLE = """
import numpy as np, torch
pipe.set_progress_bar_config(disable=True)
images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np").images
np.testing.assert_allclose(images, np.load(REFERENCE), atol=ATOL)
"""


def _run(code: str, cwd, reference=None, atol=1e-6) -> str:
    """Run `code` in a fresh interpreter; with `reference`, then sample `pipe` and compare with that .npy."""
    code = textwrap.dedent(code)
    if reference is not None:
        code += f"\nREFERENCE = {str(reference)!r}\nATOL = {atol!r}\n" + SAMPLE
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _sample(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np").images


@pytest.fixture
def saved(tmp_path):
    pipe = DDPMExtPipeline(
        tiny_unet(1, 2), DDPMExtScheduler(num_train_timesteps=50, variance_type="learned_range", beta_end=0.1)
    )
    folder = tmp_path / "model"
    pipe.save_pretrained(folder)
    np.save(tmp_path / "reference.npy", _sample(pipe))
    return folder, tmp_path / "reference.npy"


def test_saved_folder_has_the_remote_code_layout(saved):
    folder, _ = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_ext", "DDPMExtPipeline"]
    assert index["scheduler"] == ["scheduling_ddpm_ext", "DDPMExtScheduler"]
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # the copies are the package's own source, byte for byte
    import ddpm_ext.pipelines.pipeline_ddpm_ext as pipeline_module
    import ddpm_ext.schedulers.scheduling_ddpm_ext as scheduler_module

    assert (folder / "pipeline_ddpm_ext.py").read_bytes() == open(pipeline_module.__file__, "rb").read()
    assert (folder / "scheduler" / "scheduling_ddpm_ext.py").read_bytes() == open(scheduler_module.__file__, "rb").read()


def test_plugin_installed_from_pretrained_runs_no_remote_code(saved):
    folder, reference = saved
    _run(
        f"""
        import sys
        from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
        pipe = DDPMExtPipeline.from_pretrained({str(folder)!r})
        assert type(pipe) is DDPMExtPipeline and type(pipe.scheduler) is DDPMExtScheduler
        assert not any(m.startswith("diffusers_modules") for m in sys.modules), "remote code was imported"
        """,
        cwd=folder.parent,
        reference=reference,
    )


def test_plugin_installed_diffusion_pipeline_with_trust_remote_code(saved):
    folder, reference = saved
    _run(
        f"""
        import torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(pipe).__name__ == "DDPMExtPipeline", type(pipe)
        assert type(pipe.scheduler).__name__ == "DDPMExtScheduler", type(pipe.scheduler)
        bpd = pipe.bits_per_dim(torch.full((2, 1, 8, 8), -1.0), generator=torch.Generator().manual_seed(0))
        assert bpd.shape == (2,) and bool(torch.isfinite(bpd).all())
        """,
        cwd=folder.parent,
        reference=reference,
    )


def test_plugin_absent_diffusion_pipeline_with_trust_remote_code(saved):
    folder, reference = saved
    out = _run(
        BLOCK_PLUGIN
        + f"""
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)
assert type(pipe).__name__ == "DDPMExtPipeline" and type(pipe.scheduler).__name__ == "DDPMExtScheduler"
import torch
bpd = pipe.bits_per_dim(torch.full((1, 1, 8, 8), -1.0))
print("ddpm_ext" in sys.modules, float(bpd[0]) > 0)
""",
        cwd=folder.parent,
        reference=reference,
    )
    assert out.split() == ["False", "True"]


def test_without_trust_remote_code_diffusion_pipeline_refuses(saved):
    folder, _ = saved
    with pytest.raises(ValueError, match="trust_remote_code=True") as info:
        DiffusionPipeline.from_pretrained(folder)
    # diffusers' message names one way and points at the module file, whose docstring names both
    pointed = re.search(r"inspect the file content at (\S+\.py)", str(info.value))
    assert pointed, str(info.value)
    text = Path(pointed.group(1)).read_text()
    assert "DDPMExtPipeline.from_pretrained(folder)" in text
    assert "DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)" in text


def test_resaving_a_remote_code_pipeline_keeps_the_layout(saved, tmp_path):
    folder, reference = saved
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.save_pretrained(tmp_path / "again")
    index = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ddpm_ext", "DDPMExtPipeline"]
    assert index["scheduler"] == ["scheduling_ddpm_ext", "DDPMExtScheduler"]
    assert (tmp_path / "again" / "scheduler" / "scheduling_ddpm_ext.py").is_file()
    np.testing.assert_allclose(_sample(DDPMExtPipeline.from_pretrained(tmp_path / "again")), np.load(reference), atol=1e-6)


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_stock_diffusers_ddpm_layout_loads_and_samples_like_ddpm_pipeline(tmp_path, safe_serialization):
    # the layout of google/ddpm-cifar10-32, made here from a tiny UNet
    stock = DDPMPipeline(tiny_unet(3), DDPMScheduler(num_train_timesteps=40))
    stock.save_pretrained(tmp_path / "stock", safe_serialization=safe_serialization)
    assert json.loads((tmp_path / "stock" / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    reference = tmp_path / "reference.npy"
    np.save(reference, _sample(stock))
    _run(
        f"""
        from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
        pipe = DDPMExtPipeline.from_pretrained({str(tmp_path / "stock")!r})
        assert type(pipe.scheduler) is DDPMExtScheduler
        assert pipe.scheduler.config.num_train_timesteps == 40
        """,
        cwd=tmp_path,
        reference=reference,
        atol=1e-5,  # DDPMScheduler's float32 tables vs our float64 ones: fp32-level differences
    )


def test_swapping_to_ddim_saves_a_stock_scheduler_entry(saved, tmp_path):
    folder, _ = saved
    pipe = DDPMExtPipeline.from_pretrained(folder)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "ddim")
    index = json.loads((tmp_path / "ddim" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert not (tmp_path / "ddim" / "scheduler" / "scheduling_ddpm_ext.py").exists()
    assert type(DDPMExtPipeline.from_pretrained(tmp_path / "ddim").scheduler) is DDIMScheduler


# ---------------------------------------------------------------- bad folders
def test_missing_weights_name_the_missing_file(saved):
    folder, _ = saved
    os.remove(folder / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError, match="missing UNet weights in .*unet.*diffusion_pytorch_model.safetensors"):
        DDPMExtPipeline.from_pretrained(folder)


def test_corrupt_weights_are_reported(saved):
    folder, _ = saved
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="UNet"):
        DDPMExtPipeline.from_pretrained(folder)


def test_truncated_weights_are_reported(saved):
    folder, _ = saved
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="UNet"):
        DDPMExtPipeline.from_pretrained(folder)


def test_corrupt_model_index_is_reported(saved):
    folder, _ = saved
    (folder / "model_index.json").write_text('{"unet": ["diffusers", ')
    with pytest.raises(ValueError, match="corrupt model_index.json"):
        DDPMExtPipeline.from_pretrained(folder)
    os.remove(folder / "model_index.json")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        DDPMExtPipeline.from_pretrained(folder)


def test_unet_that_does_not_fit_the_saved_variance_type_is_reported(saved):
    folder, _ = saved
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["variance_type"] = "fixed_small"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="out_channels=2 but in_channels=1"):
        DDPMExtPipeline.from_pretrained(folder)
