"""The README's code blocks run as written.

* Each Python block on its own (fresh namespace), against a tiny model saved where they expect it.
* The whole README, block by block in order, in a copy of the repository as a fresh clone has it (slow): shell
  lines through bash, Python blocks through `python -c`, with DDPM_EXT_MAX_TRAIN_STEPS (a test hook the README need
  not mention) shortening every training run, the demo and `evaluate` to a smoke run. Lines that need the network,
  GPUs or the suite itself are listed in SKIPPED with the reason; each entry must match exactly one README line.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _models import tiny_unet

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# README line (start) -> why the fresh-clone test does not run it
SKIPPED = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install": "downloads packages (the test runs in this venv);"
    " its last command, `ddpm-ext demo`, is run on its own",
    ". .venv/bin/activate && python -m pytest -q": "the test suite itself (checked against .ci/run below)",
    "accelerate launch --multi_gpu --num_processes 4": "needs 4 GPUs",
    "hf auth login": "interactive, needs the Hub",
    "ddpm-ext publish": "needs the Hub (tests/test_hub.py covers it against the local stand-in)",
    "accelerate launch examples/train_ddpm.py ... --push_to_hub": "needs the Hub and a placeholder command",
}


def _blocks() -> list:
    """[(language, text)] in README order."""
    return re.findall(r"```(python|bash)\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _shell_commands(block: str) -> list:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def test_readme_python_snippets_run_each_on_its_own(tmp_path, monkeypatch):
    blocks = [text for lang, text in _blocks() if lang == "python"]
    assert len(blocks) >= 3
    pipe = DDPMExtPipeline(  # like the demo's model: class-conditional on the ten digits
        tiny_unet(1, 2, sample_size=8, num_class_embeds=11),
        DDPMExtScheduler(num_train_timesteps=100, variance_type="learned_range"),
        id2label={i: str(i) for i in range(10)},
    )
    pipe.save_pretrained(tmp_path / "ddpm-ext-demo")
    monkeypatch.chdir(tmp_path)
    namespaces = []
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
        namespaces.append(namespace)
    quickstart, swap = namespaces[0], namespaces[1]
    assert isinstance(quickstart["bpd"], torch.Tensor) and quickstart["bpd"].shape == (2,)
    assert quickstart["terms"].vb_terms_bpd.shape == (2, 100)
    assert type(swap["scheduler"]) is DDPMExtScheduler
    assert len(swap["images"]) == 4


def test_readme_skips_name_real_lines_once():
    lines = [c for lang, text in _blocks() if lang == "bash" for c in _shell_commands(text)]
    for start in SKIPPED:
        head, _, tail = start.partition(" ... ")
        assert sum(line.startswith(head) and tail in line for line in lines) == 1, start


def _skip_reason(command: str):
    for start, reason in SKIPPED.items():
        head, _, tail = start.partition(" ... ")
        if command.startswith(head) and tail in command:
            return reason
    return None


@pytest.mark.slow
def test_the_whole_readme_runs_in_order_from_a_fresh_clone(tmp_path):
    clone = tmp_path / "ddpm-ext"
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    env = dict(
        os.environ,
        PYTHONPATH=str(clone),
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        DDPM_EXT_MAX_TRAIN_STEPS="2",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf-home"),
    )
    ran, skipped = [], []
    for lang, text in _blocks():
        if lang == "python":
            commands = [[sys.executable, "-c", text]]
        else:
            commands = []
            for command in _shell_commands(text):
                reason = _skip_reason(command)
                if reason is not None and command.startswith("python3 -m venv"):
                    command = command.rsplit("&& ", 1)[1]  # `ddpm-ext demo`
                elif reason is not None:
                    skipped.append(command)
                    continue
                commands.append(["bash", "-c", command])
        for argv in commands:
            done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
            assert done.returncode == 0, f"README command failed ({done.returncode}): {argv[-1]}\n{done.stderr[-3000:]}"
            ran.append(argv[-1])
    assert any(c.startswith("ddpm-ext demo") for c in ran) and any("--resume_from_checkpoint latest" in c for c in ran)
    assert len(skipped) == len(SKIPPED) - 1, skipped
    assert (clone / "ddpm-ext-demo" / "model_index.json").is_file()
    assert (clone / "grid.png").is_file()
    for run in ("ddpm-digits", "ddpm-digits-python", "ddpm-digits-cli", "iddpm-digits", "ddpm-digits-2proc"):
        assert (clone / run / "model_index.json").is_file(), run


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
    # the slow end-to-end tests, left out of the default run, are still run by CI
    assert "python -m pytest -q -m slow" in readme and "python -m pytest -q -m slow" in ci
