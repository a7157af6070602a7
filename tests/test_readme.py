"""The README's Python snippets run as written (against a tiny model saved where they expect it; no downloads)."""

import re
from pathlib import Path

import torch
from _models import tiny_unet

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert len(blocks) >= 3
    pipe = DDPMExtPipeline(
        tiny_unet(1, 2, sample_size=16), DDPMExtScheduler(num_train_timesteps=100, variance_type="learned_range")
    )
    pipe.save_pretrained(tmp_path / "ddpm-ext-demo")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert isinstance(namespace["bpd"], torch.Tensor) and namespace["bpd"].shape == (2,)
    assert namespace["terms"].vb_terms_bpd.shape == (2, 100)
    assert type(namespace["scheduler"]) is DDPMExtScheduler


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
