"""The `ddpm-ext` console command: each subcommand on a tiny model, one-line errors, help with examples."""

import json
import subprocess
import sys

import numpy as np
import pytest
from _models import tiny_unet
from PIL import Image

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
from ddpm_ext.cli import main


@pytest.fixture
def model_dir(tmp_path):
    pipe = DDPMExtPipeline(tiny_unet(1, 2), DDPMExtScheduler(num_train_timesteps=20, variance_type="learned_range"))
    pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_console_script_help_lists_every_command_and_each_has_an_example():
    out = subprocess.run(["ddpm-ext", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "train", "sample", "evaluate", "publish"):
        assert command in out
        help_text = subprocess.run(
            [sys.executable, "-m", "ddpm_ext.cli", command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "example" in help_text and f"ddpm-ext {command}" in help_text


def test_sample_writes_a_grid_png(model_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "--model", str(model_dir), "--num", "4", "--steps", "5", "--eta", "0", "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size[0] >= 2 * 8 and "wrote" in capsys.readouterr().out
    # 4 images in a 2×2 grid of 8×8 tiles with 1-pixel borders, upscaled by an integer factor
    assert image.size[0] % (2 * 9 + 1) == 0


def test_evaluate_prints_a_table_and_writes_json_and_plot(model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main([
        "evaluate", "--model", str(model_dir), "--num-samples", "8", "--steps", "2,5", "--nll", "--nll-images", "4",
        "--out", str(out),
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["steps"] for r in results["steps"]] == [2, 5]
    assert all(np.isfinite(r["frechet_distance"]) and r["frechet_distance"] > 0 for r in results["steps"])
    assert results["bits_per_dim"]["num_images"] == 4 and results["bits_per_dim"]["mean"] > 0
    assert (out / "fd_vs_steps.png").is_file()
    printed = capsys.readouterr().out
    assert "| 2 |" in printed and "bits/dim on 4 held-out images" in printed


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sample", "--model", "/nonexistent/folder/x"], "error:"),
        (["evaluate", "--model", "MODEL", "--steps", "ten"], "--steps must be comma-separated integers"),
        (["evaluate", "--model", "MODEL", "--steps", "5,50"], r"steps must be integers in [1, 20]"),
        (["sample", "--model", "MODEL", "--num", "0"], "--num must be >= 1"),
        (["demo", "--output-dir", "MODEL_PARENT/demo-x", "--nll-images", "0"], "--nll-images must be an integer in [1, 1732]"),
        (["publish", "MODEL_PARENT", "--repo-id", "tester/x"], "holds no saved pipeline"),
    ],
)
def test_errors_are_one_line_without_traceback(model_dir, argv, message, capsys):
    argv = [a.replace("MODEL_PARENT", str(model_dir.parent)).replace("MODEL", str(model_dir)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddpm-ext: error:") and "\n" not in err and message in err
    with pytest.raises(Exception):
        main(["--debug", *argv])


def test_publish_uploads_the_run_to_the_hub(model_dir, hub_server, hf_token, capsys):
    from huggingface_hub import list_repo_files

    (model_dir / "checkpoint-5").mkdir()
    (model_dir / "checkpoint-5" / "state.bin").write_bytes(b"x")
    assert main(["publish", str(model_dir), "--repo-id", "tester/cli-model", "--token", hf_token, "--private"]) == 0
    files = set(list_repo_files("tester/cli-model", token=hf_token))
    assert {"model_index.json", "pipeline_ddpm_ext.py", "scheduler/scheduling_ddpm_ext.py"} <= files
    assert not any(f.startswith("checkpoint-") for f in files)
    assert hub_server.repo("tester/cli-model")["private"] is True


def test_train_runs_the_training_command_in_process(tmp_path):
    out = tmp_path / "run"
    code = main([
        "train", "--no-launch", "--output_dir", str(out), "--max_train_steps", "2", "--train_batch_size", "4",
        "--ddpm_num_steps", "10", "--ddpm_num_inference_steps", "5", "--logger", "none", "--lr_warmup_steps", "0",
    ])
    assert code == 0
    assert type(DDPMExtPipeline.from_pretrained(out).scheduler) is DDPMExtScheduler


def test_demo_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main([
        "demo", "--output-dir", str(out), "--max-train-steps", "2", "--resolution", "8", "--train-timesteps", "20",
        "--num-samples", "20", "--steps", "5", "--nll-images", "4",
    ])
    assert code == 0
    summary = json.loads((out / "demo_results.json").read_text())
    assert summary["train_steps"] == 2 and summary["bits_per_dim"] > 0 and summary["frechet_distance"] > 0
    # the bits/dim digits are held out of training by the trainer itself (1,797 - 4 trained on)
    assert summary["bits_per_dim_held_out_images"] == 4
    card = (out / "README.md").read_text()  # the trainer's own held-out evaluation, the figure the demo prints
    assert "eval_nll_num_images: 4" in card and f"held_out_bits_per_dim: {summary['bits_per_dim']:.4f}" in card
    assert 0 <= summary["class_accuracy"] <= 1 and summary["guidance_scale"] == 1.5
    printed = capsys.readouterr().out
    assert 'DiffusionPipeline.from_pretrained("' in printed and "demo_samples.png" in printed
    assert 'class_labels="7"' in printed and "class accuracy" in printed
    pipe = DDPMExtPipeline.from_pretrained(out)
    assert pipe.unet.config.sample_size == 8 and pipe.labels == {str(d): d for d in range(10)}
    # the grid: one row per digit, 2 samples each (20 samples), 8×8 tiles with 1-pixel borders, upscaled
    from PIL import Image

    width, height = Image.open(out / "demo_samples.png").size
    assert width * (10 * 9 + 1) == height * (2 * 9 + 1)


# ----------------------------------------------------------------------------- errors at the edges (issue 18, 4)
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--ddpm_num_steps", "10", "--ddpm_num_inference_steps", "2", "--lr_warmup_steps", "0", "--logger", "none",
              "--train_batch_size", "4", "--eval_batch_size", "2", "--resolution", "8", "--max_train_steps", "1"]


def _cli_env(**extra):
    import os

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    for name in ("ACCELERATE_USE_CPU", "OMP_NUM_THREADS", "ACCELERATE_MIXED_PRECISION"):
        env.pop(name, None)
    env.update(extra)
    return env


@pytest.mark.parametrize("flags,message", [
    (["--resolution", "0"], "resolution=0 is not allowed; expected an integer >= 1"),
    (["--variance_type", "learned_range"], "variance_type='learned_range' needs loss_type 'hybrid' or 'vlb'"),
    (["--loss_type", "mse"], "argument --loss_type: invalid choice: 'mse'"),
])
def test_a_bad_flag_through_the_default_launcher_is_one_line_and_exit_2(tmp_path, flags, message):
    out = tmp_path / "run"
    proc = subprocess.run(["ddpm-ext", "train", "--output_dir", str(out), *flags], env=_cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert message in line
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr
    assert "running:" not in proc.stdout  # refused before any process started
    assert not out.exists()


@pytest.mark.parametrize("argv,message", [
    (["sample", "--model", "does-not-exist"], "--model 'does-not-exist': no such folder"),
    (["evaluate", "--model", "MODEL", "--real", "./nope"], "--real './nope': no such folder"),
    (["evaluate", "--model", "/no/such/folder", "--real", "MODEL"], "--model '/no/such/folder': no such folder"),
    (["sample", "--model", "MODEL", "--out", "MODEL_PARENT"], "is a folder; give an image file name"),
    (["sample", "--model", "MODEL", "--out", "MODEL_PARENT/grid"], "has no image extension; allowed: .bmp"),
    (["sample", "--model", "MODEL", "--out", "MODEL_PARENT/grid.txt"], "has no image extension"),
])
def test_mistyped_paths_and_outputs_fail_at_once_with_what_is_wrong(model_dir, argv, message, capsys, monkeypatch):
    from ddpm_ext import cli

    def no_loading(*args, **kwargs):
        raise AssertionError("a bad path must be refused before any model is loaded or sampled")

    monkeypatch.setattr(cli, "_from_pretrained", no_loading)
    argv = [a.replace("MODEL_PARENT", str(model_dir.parent)).replace("MODEL", str(model_dir)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddpm-ext: error:") and "\n" not in err and message in err, err


def test_only_namespace_name_goes_to_the_hub():
    from ddpm_ext.cli import _is_repo_id

    assert _is_repo_id("google/ddpm-cifar10-32") and _is_repo_id("tester/x.y_z")
    for text in ("does-not-exist", "./nope", "../a/b", "/abs/x", "a/b/c", "~/x", "a/", "/x", "a b/c"):
        assert not _is_repo_id(text), text


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusal is for machines without GPUs")
def test_several_processes_on_a_machine_without_gpus_are_refused_by_both_launchers(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(["ddpm-ext", "train", "--launcher-args", "--multi_gpu --num_processes 4",
                           "--output_dir", str(out), *TINY_TRAIN], env=_cli_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert "'--multi_gpu --num_processes 4' asks for several processes, but this machine has no GPU" in line
    assert "ACCELERATE_USE_CPU=1" in line and "running:" not in proc.stdout
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "ddpm_ext.training", "--output_dir", str(out), *TINY_TRAIN]
    proc = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "error: the launcher started 2 processes" in line]
    assert len(lines) == 1, proc.stderr[-3000:]  # one line for the run, from rank 0
    assert not out.exists()


@pytest.mark.parametrize("launcher", ["accelerate launch", "ddpm-ext train"])
def test_one_cpu_process_trains_at_the_machines_thread_count_through_each_launcher(tmp_path, launcher):
    import os

    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("one CPU: nothing to raise")
    out = tmp_path / "run"
    flags = ["--output_dir", str(out), *TINY_TRAIN]
    cmd = {
        "accelerate launch": [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                              "-m", "ddpm_ext.training", *flags],
        "ddpm-ext train": ["ddpm-ext", "train", *flags],
    }[launcher]
    proc = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"one training process on the CPU: using {cpus} threads (accelerate set OMP_NUM_THREADS=1; was 1)" in (
        proc.stderr)
    # a thread count the user gave is kept
    proc = subprocess.run(cmd + ["--overwrite_output_dir"], env=_cli_env(OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "one training process on the CPU: using" not in proc.stderr
