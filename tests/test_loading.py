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
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=900)
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


# ---------------------------------------------------------------- bad folders: the same errors as DDPMPipeline
def _damage(folder, how):
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if how == "missing_weights":
        os.remove(weights)
    elif how == "corrupt_weights":
        weights.write_bytes(b"\x00garbage" * 10)
    elif how == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "corrupt_model_index":
        (folder / "model_index.json").write_text('{"unet": ["diffusers", ')
    else:
        os.remove(folder / "model_index.json")


@pytest.mark.parametrize(
    "how", ["missing_weights", "corrupt_weights", "truncated_weights", "corrupt_model_index", "missing_model_index"]
)
def test_a_damaged_folder_raises_what_ddpm_pipeline_raises(saved, tmp_path, how):
    # a deliberate change (issue 13): loading is diffusers' own, so the errors are DDPMPipeline's, naming the file
    folder, _ = saved
    stock = tmp_path / "stock"
    DDPMPipeline(tiny_unet(1), DDPMScheduler(num_train_timesteps=50)).save_pretrained(stock)
    _damage(folder, how)
    _damage(stock, how)
    with pytest.raises(Exception) as theirs:
        DDPMPipeline.from_pretrained(stock)
    for load, path in [(DDPMExtPipeline.from_pretrained, folder), (DDPMExtPipeline.from_pretrained, stock)]:
        with pytest.raises(type(theirs.value)) as ours:
            load(path)
        assert str(ours.value) == str(theirs.value).replace(str(stock), str(path))


# ---------------------------------------------------------------- loading keywords: as for DDPMPipeline, every route
def _logged(fn):
    """Run fn() with diffusers' INFO logging on; return (result, the messages diffusers logged)."""
    import logging

    from diffusers.utils import logging as diffusers_logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    root = logging.getLogger("diffusers")
    level = diffusers_logging.get_verbosity()
    root.addHandler(handler)
    diffusers_logging.set_verbosity_info()
    try:
        return fn(), messages
    finally:
        root.removeHandler(handler)
        diffusers_logging.set_verbosity(level)


KEYWORD_CASES = [
    (dict(dtype=torch.float16), torch.float16),
    (dict(torch_dtype=torch.bfloat16), torch.bfloat16),
    (dict(torch_dtype={"unet": torch.bfloat16, "default": torch.float16}), torch.bfloat16),
    (dict(dtype={"default": torch.float16}), torch.float16),
]

LOADERS = {
    "plugin": lambda folder, **kw: DDPMExtPipeline.from_pretrained(folder, **kw),
    "remote_code_with_plugin": lambda folder, **kw: DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, **kw),
}


@pytest.fixture
def stock_and_variant(saved, tmp_path):
    folder, _ = saved
    stock = tmp_path / "stock"
    DDPMPipeline(tiny_unet(1), DDPMScheduler(num_train_timesteps=50)).save_pretrained(stock)
    DDPMPipeline.from_pretrained(stock).save_pretrained(tmp_path / "stock_fp16", variant="fp16")
    DDPMExtPipeline.from_pretrained(folder).save_pretrained(tmp_path / "ext_fp16", variant="fp16")
    return folder, stock, tmp_path / "stock_fp16", tmp_path / "ext_fp16"


@pytest.mark.parametrize("route", list(LOADERS))
def test_loading_keywords_behave_as_for_ddpm_pipeline(stock_and_variant, route):
    folder, stock, stock_fp16, ext_fp16 = stock_and_variant
    load = LOADERS[route]
    for kwargs, dtype in KEYWORD_CASES:
        assert DDPMPipeline.from_pretrained(stock, **kwargs).unet.dtype == dtype
        assert load(folder, **kwargs).unet.dtype == dtype, kwargs
    # a variant that is not there: diffusers' ValueError, word for word; one that is there loads
    with pytest.raises(ValueError) as theirs:
        DDPMPipeline.from_pretrained(stock, variant="fp16")
    with pytest.raises(ValueError) as ours:
        load(folder, variant="fp16")
    assert str(ours.value) == str(theirs.value)
    assert load(ext_fp16, variant="fp16").unet.dtype == torch.float32
    # unknown keywords: diffusers' warning; each loaded component logged
    _, theirs_log = _logged(lambda: DDPMPipeline.from_pretrained(stock, not_a_keyword=1))
    pipe, ours_log = _logged(lambda: load(folder, not_a_keyword=1))
    assert "Keyword arguments {'not_a_keyword': 1} are not expected by DDPMPipeline and will be ignored." in theirs_log
    assert "Keyword arguments {'not_a_keyword': 1} are not expected by DDPMExtPipeline and will be ignored." in ours_log
    for name, cls in [("unet", "UNet2DModel"), ("scheduler", "DDPMExtScheduler")]:
        assert f"Loaded {name} as {cls} from `{name}` subfolder of {folder}." in ours_log
    assert type(pipe.scheduler).__name__ == "DDPMExtScheduler"
    # a passed component is used as is
    unet = tiny_unet(1, 2)
    assert load(folder, unet=unet).unet is unet


def test_stock_layout_upgrade_takes_the_keywords_too(stock_and_variant):
    _, stock, stock_fp16, _ = stock_and_variant
    for kwargs, dtype in KEYWORD_CASES:
        pipe = DDPMExtPipeline.from_pretrained(stock, **kwargs)
        assert type(pipe.scheduler) is DDPMExtScheduler and pipe.unet.dtype == dtype
    with pytest.raises(ValueError) as theirs:
        DDPMPipeline.from_pretrained(stock, variant="fp16")
    with pytest.raises(ValueError) as ours:
        DDPMExtPipeline.from_pretrained(stock, variant="fp16")
    assert str(ours.value) == str(theirs.value)
    assert type(DDPMExtPipeline.from_pretrained(stock_fp16, variant="fp16").scheduler) is DDPMExtScheduler
    _, log = _logged(lambda: DDPMExtPipeline.from_pretrained(stock, not_a_keyword=1))
    assert "Keyword arguments {'not_a_keyword': 1} are not expected by DDPMExtPipeline and will be ignored." in log
    assert f"Loaded scheduler as DDPMExtScheduler from `scheduler` subfolder of {stock}." in log


def test_loading_keywords_without_the_plugin(stock_and_variant, tmp_path):
    folder, stock, _, ext_fp16 = stock_and_variant
    with pytest.raises(ValueError) as theirs:
        DDPMPipeline.from_pretrained(stock, variant="fp16")
    expected_variant_error = str(theirs.value)
    out = _run(
        BLOCK_PLUGIN
        + f"""
import logging, torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
folder, ext_fp16 = {str(folder)!r}, {str(ext_fp16)!r}
load = lambda path, **kw: DiffusionPipeline.from_pretrained(path, trust_remote_code=True, **kw)
for kwargs, dtype in {[(repr(k), repr(d)) for k, d in KEYWORD_CASES]!r}:
    kwargs, dtype = eval(kwargs), eval(dtype)
    assert load(folder, **kwargs).unet.dtype == dtype, kwargs
try:
    load(folder, variant="fp16")
except ValueError as e:
    assert str(e) == {expected_variant_error!r}, str(e)
else:
    raise SystemExit("no ValueError for a missing variant")
assert load(ext_fp16, variant="fp16").unet.dtype == torch.float32
messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger("diffusers").addHandler(handler)
diffusers_logging.set_verbosity_info()
load(folder, not_a_keyword=1)
assert "Keyword arguments {{'not_a_keyword': 1}} are not expected by DDPMExtPipeline and will be ignored." in messages
assert "Loaded scheduler as DDPMExtScheduler from `scheduler` subfolder of " + folder + "." in messages, messages
print("ddpm_ext" in sys.modules)
""",
        cwd=tmp_path,
    )
    assert out.split()[-1] == "False"


def test_unet_that_does_not_fit_the_saved_variance_type_is_reported(saved):
    folder, _ = saved
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["variance_type"] = "fixed_small"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="out_channels=2 but in_channels=1"):
        DDPMExtPipeline.from_pretrained(folder)
