"""Training that never loses or leaks (issue 14): signals through launchers, divergence, reused folders, damaged
checkpoints, atomic pipeline saves, a full disk.

Real subprocesses and real signals on tiny 8×8 runs; each test polls for the state it needs (a logged step, a
checkpoint) instead of sleeping, with generous timeouts for a loaded machine.
"""

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddpm_ext.training import DDPMTrainer, TrainingConfig, list_checkpoints
from ddpm_ext.training.checkpoints import DiskFullError, verify_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "examples" / "train_ddpm.py")
SMALL = [
    "--ddpm_num_steps", "20", "--ddpm_num_inference_steps", "5", "--lr_warmup_steps", "0", "--learning_rate", "1e-3",
    "--train_batch_size", "8", "--eval_batch_size", "4", "--logger", "none", "--resolution", "8",
    "--lr_scheduler", "constant", "--logging_steps", "1",
]
LAUNCH_2 = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", "0"]
LAUNCH_1 = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
TIMEOUT = 900


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def _env(**extra) -> dict:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath, ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    env.update(extra)
    return env


def _run(args, timeout=TIMEOUT, **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def _flags(out: Path, *args: str) -> list:
    return [SCRIPT, "--output_dir", str(out), *SMALL, *args]


def _script(out: Path, *args: str) -> list:
    return [sys.executable, *_flags(out, *args)]


def _wait_for(predicate, proc, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before {what}: "
                                 f"{proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _logged(out: Path) -> bool:
    path = out / "metrics.jsonl"
    return path.is_file() and '"loss"' in path.read_text()


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ---------------------------------------------------------------------- 1. signals through launchers
def _start(cmd, status: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=_env(DDPM_EXT_STATUS_FILE=str(status)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _assert_saved_and_stopped(out: Path, err: str, status: Path) -> int:
    assert status.read_text() == str(128 + signal.SIGTERM), err[-3000:]
    found = list_checkpoints(str(out))
    assert found and not verify_checkpoint(found[-1][1], "ddpm_ext_training.json"), err[-3000:]
    assert "stopped by SIGTERM" in err
    assert not (out / "model_index.json").exists()
    return found[-1][0]


def test_sigterm_to_accelerate_launch_reaches_the_trainer(tmp_path):
    out, status = tmp_path / "run", tmp_path / "status"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH_1, *_flags(out, "--max_train_steps", "100000",
                                                                                  "--checkpointing_steps", "100000")]
    proc = _start(cmd, status)
    _wait_for(lambda: _logged(out), proc, "a logged step")
    proc.send_signal(signal.SIGTERM)
    # the launcher dies at once (accelerate does not forward); the pipes close only when the trainer has exited too
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGTERM
    _assert_saved_and_stopped(out, err, status)


def test_sigterm_to_ddpm_ext_train_saves_and_exits_143(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ddpm_ext.cli", "train", "--launcher-args", " ".join(LAUNCH_1), "--output_dir",
           str(out), *SMALL, "--max_train_steps", "100000", "--checkpointing_steps", "100000"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _logged(out), proc, "a logged step")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    found = list_checkpoints(str(out))
    assert found and "stopped by SIGTERM" in err and not (out / "model_index.json").exists()


def test_sigterm_to_ddpm_ext_train_with_two_processes_saves_and_exits_143(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ddpm_ext.cli", "train", "--launcher-args", " ".join(LAUNCH_2), "--output_dir",
           str(out), *SMALL, "--train_batch_size", "4", "--max_train_steps", "100000", "--checkpointing_steps",
           "100000"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _logged(out), proc, "a logged step")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    found = list_checkpoints(str(out))
    assert found and not verify_checkpoint(found[-1][1], "ddpm_ext_training.json")
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(os.listdir(found[-1][1]))


def test_sigkilled_two_process_launcher_leaves_no_worker_training(tmp_path):
    out, status = tmp_path / "run", tmp_path / "status"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH_2,
           *_flags(out, "--train_batch_size", "4", "--max_train_steps", "100000", "--checkpointing_steps", "100000")]
    proc = _start(cmd, status)
    _wait_for(lambda: _logged(out), proc, "a logged step")
    proc.send_signal(signal.SIGKILL)
    # the workers hold the pipes open: communicate returns once both have stopped
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    step = _assert_saved_and_stopped(out, err, status)
    time.sleep(3)
    assert [s for s, _ in list_checkpoints(str(out))][-1] == step  # nothing trains on


# ---------------------------------------------------------------------- 3. divergence
@pytest.mark.parametrize("name, value", [("learning_rate", "inf"), ("max_grad_norm", "nan"), ("adam_epsilon", "inf")])
def test_non_finite_option_values_are_refused(tmp_path, name, value):
    proc = _run(_script(tmp_path / "run", f"--{name}", value, "--max_train_steps", "1"), timeout=600)
    assert proc.returncode == 2 and f"{name}={float(value)!r} is not allowed; expected a finite number" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_diverged_run_stops_with_status_3_and_keeps_the_last_good_outputs(tmp_path, hub_server, hf_token):
    # the Hub stand-in is up (the push target is checked before the first step); nothing may be committed to it
    out = tmp_path / "run"
    proc = _run(_script(out, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    unet = out / "unet" / "diffusion_pytorch_model.safetensors"
    before = _tree(out / "unet"), unet.read_bytes()
    # a new run into the folder (its checkpoints cleared, the finished pipeline still there) that diverges
    proc = _run(_script(out, "--max_train_steps", "40", "--checkpointing_steps", "1", "--learning_rate", "1e6",
                        "--overwrite_output_dir", "--push_to_hub", "--hub_model_id", "tester/never", "--hub_token", hf_token))
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "training diverged" in proc.stderr and "not finite" in proc.stderr
    assert (_tree(out / "unet"), unet.read_bytes()) == before  # the finished run's pipeline is untouched
    for _, path in list_checkpoints(str(out)):
        weights = load_file(os.path.join(path, "model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values()), path
    assert hub_server.calls("POST", "/commit/") == []  # no push was tried


# ---------------------------------------------------------------------- 4. reused folders
def test_new_run_into_a_folder_with_checkpoints_is_refused_and_overwrite_starts_over(tmp_path):
    out = tmp_path / "run"
    assert _run(_script(out, "--max_train_steps", "4", "--checkpointing_steps", "2")).returncode == 0
    before = _tree(out)
    proc = _run(_script(out, "--max_train_steps", "2", "--checkpointing_steps", "1"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and str(out) in lines[0]
    assert "--resume_from_checkpoint latest" in lines[0] and "--overwrite_output_dir" in lines[0]
    assert _tree(out) == before

    proc = _run(_script(out, "--max_train_steps", "3", "--checkpointing_steps", "3", "--overwrite_output_dir"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [s for s, _ in list_checkpoints(str(out))] == [3]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 3 and sorted(set(steps)) == [1, 2, 3]


def test_resuming_with_flags_that_break_exactness_warns_naming_each(tmp_path):
    out = tmp_path / "run"
    assert _run(_script(out, "--max_train_steps", "2", "--checkpointing_steps", "2")).returncode == 0
    proc = _run(_script(out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest", "--seed", "7",
                        "--learning_rate", "2e-3", "--train_batch_size", "4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in ("seed: checkpoint 0, this run 7", "train_batch_size: checkpoint 8, this run 4",
                 "learning_rate: checkpoint 0.001, this run 0.002 (ignored: the checkpoint's optimizer keeps its value)"):
        assert text in proc.stderr
    assert "not bit-identical" in proc.stderr


# ---------------------------------------------------------------------- 5. damaged checkpoints
@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    proc = _run(_script(out, "--max_train_steps", "4", "--checkpointing_steps", "2", "--use_ema"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _truncate(path: Path, size=None):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])


def _flip(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) - 100] ^= 0x01  # inside the tensor data: the file still loads, with a wrong weight
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated safetensors": (lambda c: _truncate(c / "model.safetensors"), "model.safetensors has"),
    "empty safetensors": (lambda c: _truncate(c / "model.safetensors", 0), "model.safetensors has 0 bytes"),
    "truncated optimizer": (lambda c: _truncate(c / "optimizer.bin"), "optimizer.bin has"),
    "missing EMA state": (lambda c: (c / "custom_checkpoint_3.pkl").unlink(), "custom_checkpoint_3.pkl is missing"),
    "flipped byte": (lambda c: _flip(c / "model.safetensors"), "model.safetensors does not match its sha256"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_latest_skips_a_damaged_checkpoint_and_says_why(two_checkpoints, tmp_path, corruption, caplog):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    damage, reason = CORRUPTIONS[corruption]
    damage(out / "checkpoint-4")
    config = TrainingConfig(output_dir=str(out), ddpm_num_steps=20, ddpm_num_inference_steps=5, lr_warmup_steps=0,
                            train_batch_size=8, logger="none", resolution=8, learning_rate=1e-3, use_ema=True,
                            lr_scheduler="constant", resume_from_checkpoint="latest")
    with caplog.at_level(logging.WARNING, logger="ddpm_ext.training.loop"):
        trainer = DDPMTrainer(config)
        assert trainer._resolve_resume() == str(out / "checkpoint-2")
    assert any("skipped the damaged checkpoint-4" in r.getMessage() and reason in r.getMessage()
               for r in caplog.records)
    explicit = TrainingConfig(**dict(config.__dict__, resume_from_checkpoint=str(out / "checkpoint-4")))
    with pytest.raises(ValueError, match=f"checkpoint-4.*is damaged: {reason}"):
        DDPMTrainer(explicit)._resolve_resume()


def test_resume_after_a_damaged_checkpoint_and_a_half_written_metrics_line(two_checkpoints, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    _truncate(out / "checkpoint-4" / "model.safetensors", 0)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "lo')
    proc = _run(_script(out, "--max_train_steps", "4", "--checkpointing_steps", "2", "--use_ema",
                        "--resume_from_checkpoint", "latest"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped the damaged checkpoint-4" in proc.stderr and "resumed from" in proc.stderr
    # resumed from checkpoint-2 and retrained steps 3-4 exactly as the first run did
    a = load_file(two_checkpoints / "checkpoint-4" / "model.safetensors")
    b = load_file(out / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not verify_checkpoint(str(out / "checkpoint-4"), "ddpm_ext_training.json")


def test_every_checkpoint_records_checksums_of_all_its_files(two_checkpoints):
    for _, path in list_checkpoints(str(two_checkpoints)):
        marker = json.loads(Path(path, "ddpm_ext_training.json").read_text())
        names = {str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file()}
        assert set(marker["files"]) == names - {"ddpm_ext_training.json"}
        assert all(len(v["sha256"]) == 64 for v in marker["files"].values())


# ---------------------------------------------------------------------- 6. atomic pipeline save
FAIL_IN_SAVE = """
import sys
import diffusers
from ddpm_ext.training.__main__ import main
original = diffusers.UNet2DModel.save_pretrained
def broken(self, folder, *args, **kwargs):
    original(self, folder, *args, **kwargs)
    raise OSError(5, "injected I/O error after the UNet was written", folder)
diffusers.UNet2DModel.save_pretrained = broken
sys.exit(main(sys.argv[1:]))
"""


def test_a_failure_in_the_final_pipeline_save_leaves_the_previous_pipeline_intact(tmp_path):
    out = tmp_path / "run"
    assert _run(_script(out, "--max_train_steps", "2", "--checkpointing_steps", "2")).returncode == 0
    pipeline_files = ["model_index.json", "unet", "scheduler"]
    before = {name: _tree(out / name) if (out / name).is_dir() else (out / name).read_bytes()
              for name in pipeline_files}
    weights = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    proc = _run([sys.executable, "-c", FAIL_IN_SAVE, "--output_dir", str(out), *SMALL, "--max_train_steps", "3",
                 "--checkpointing_steps", "100", "--resume_from_checkpoint", "latest"])
    assert proc.returncode != 0 and "injected I/O error" in proc.stderr
    after = {name: _tree(out / name) if (out / name).is_dir() else (out / name).read_bytes()
             for name in pipeline_files}
    assert after == before
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == weights
    assert not [p for p in os.listdir(out) if p.startswith((".tmp-pipeline", ".old-pipeline"))]
    from ddpm_ext import DDPMExtPipeline

    DDPMExtPipeline.from_pretrained(str(out))


# ---------------------------------------------------------------------- 7. disk full
def _small_trainer(tmp_path, **overrides) -> DDPMTrainer:
    values = dict(output_dir=str(tmp_path / "run"), ddpm_num_steps=20, ddpm_num_inference_steps=5, lr_warmup_steps=0,
                  train_batch_size=8, logger="none", resolution=8, learning_rate=1e-3)
    values.update(overrides)
    return DDPMTrainer(TrainingConfig(**values)).setup()


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("basic_ios::clear: iostream error")])
def test_disk_full_during_a_checkpoint_says_so_and_keeps_the_earlier_one(tmp_path, monkeypatch, failure):
    trainer = _small_trainer(tmp_path)
    os.makedirs(trainer.config.output_dir)
    trainer.train_steps(1)
    first = trainer.save_checkpoint()
    trainer.train_steps(1)

    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=r"disk full at .*\.tmp-checkpoint-2, \d+\.\d MB needed"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert [p for _, p in list_checkpoints(trainer.config.output_dir)] == [first]
    assert not verify_checkpoint(first, "ddpm_ext_training.json")
    assert not (tmp_path / "run" / ".tmp-checkpoint-2").exists()


def test_a_really_full_disk_stops_the_run_with_status_3(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    # a checkpoint of the tiny UNet (no EMA) is ~8 MB: 12 MB hold one, not two
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the injected failures above cover the logic")
    try:
        out = mount / "run"
        proc = _run(_script(out, "--max_train_steps", "4", "--checkpointing_steps", "2"))
        assert proc.returncode == 3, proc.stderr[-3000:]
        assert f"disk full at {out}" in proc.stderr and "MB needed" in proc.stderr
        assert [s for s, _ in list_checkpoints(str(out))] == [2]
        assert not verify_checkpoint(str(out / "checkpoint-2"), "ddpm_ext_training.json")
        assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
    finally:
        subprocess.run(["umount", str(mount)], check=False)
