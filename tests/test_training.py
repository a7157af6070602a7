"""Training (ddpm_ext.training, examples/train_ddpm.py): end to end, bf16, 2-process gloo, exact resume, SIGTERM, errors.

Runs are tiny (the `tiny` UNet at 8×8, T = 20, a few steps) and go through the real command line in subprocesses
where processes, signals or accelerate state matter. Every run is pinned to the CPU (`ACCELERATE_USE_CPU=1`, in this
process and in the subprocesses), so on a machine with a GPU these tests still check the CPU behaviour they describe
(bit-exact resume, fp16 falling back to fp32); `tests/test_gpu.py` covers CUDA.
"""

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
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from ddpm_ext import DDPMExtPipeline
from ddpm_ext.training import DDPMTrainer, TrainingConfig, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "examples" / "train_ddpm.py")
SMALL = [
    "--ddpm_num_steps", "20", "--ddpm_num_inference_steps", "5", "--lr_warmup_steps", "0", "--learning_rate", "1e-3",
    "--train_batch_size", "8", "--eval_batch_size", "4", "--logger", "none", "--resolution", "8",
    "--lr_scheduler", "constant", "--logging_steps", "2",
]


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def _env(threads: int = 1) -> dict:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    # the subprocesses see no GPU at all, so they run on the CPU as these tests intend, whatever the machine has
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=pythonpath, ACCELERATE_USE_CPU="1",
               CUDA_VISIBLE_DEVICES="")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def _train(out: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    cmd = [sys.executable, SCRIPT, "--output_dir", str(out), *SMALL, *args]
    proc = subprocess.run(cmd, env=_env(2), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _losses(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _ema_params(checkpoint: str) -> list:
    # registration order in the loop: step counter, LR schedule, timestep sampler, EMA
    return torch.load(os.path.join(checkpoint, "custom_checkpoint_3.pkl"), weights_only=False)["shadow_params"]


def _small_config(tmp_path: Path, **overrides) -> TrainingConfig:
    values = dict(
        output_dir=str(tmp_path / "run"), ddpm_num_steps=20, ddpm_num_inference_steps=5, lr_warmup_steps=0,
        train_batch_size=8, logger="none", resolution=8, learning_rate=1e-3,
    )
    values.update(overrides)
    return TrainingConfig(**values)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    _train(
        out, "--max_train_steps", "6", "--checkpointing_steps", "2", "--checkpoints_total_limit", "2", "--use_ema",
        "--eval_nll_steps", "3", "--eval_nll_num_images", "8",
    )
    return out


def test_one_process_run_leaves_loadable_ema_pipeline_card_and_pruned_checkpoints(finished_run):
    out = finished_run
    assert [step for step, _ in list_checkpoints(str(out))] == [4, 6]
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-") or p == "checkpoint-2"]

    pipe = DDPMExtPipeline.from_pretrained(str(out))
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np")
    assert images.images.shape == (2, 8, 8, 1)
    # the saved UNet holds the EMA weights of the last step, not the raw ones
    saved = list(pipe.unet.parameters())
    ema = _ema_params(os.path.join(out, "checkpoint-6"))
    raw = load_file(os.path.join(out, "checkpoint-6", "model.safetensors"))
    assert len(saved) == len(ema) and all(torch.equal(a, b) for a, b in zip(saved, ema))
    assert any(not torch.equal(p, raw[n]) for n, p in pipe.unet.named_parameters())

    card = ModelCard.load(str(out / "README.md"))
    assert card.data.library_name == "diffusers"
    assert {"ddpm-ext", "diffusers", "unconditional-image-generation"} <= set(card.data.tags)
    assert card.data.ddpm_ext_training_config["max_train_steps"] == 6
    assert card.data.ddpm_ext_metrics["global_step"] == 6
    assert "sample_grid.png" in card.text and (out / "sample_grid.png").is_file()
    assert (out / "training_curves.png").is_file() and list((out / "samples").glob("*.png"))

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted(_losses(out)) == list(range(1, 7))
    bpd = [r for r in rows if "bits_per_dim" in r]
    assert [r["step"] for r in bpd] == [3, 6] and all(0 < r["bits_per_dim"] < 20 for r in bpd)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    out = tmp_path / "bf16"
    proc = _train(out, "--max_train_steps", "3", "--mixed_precision", "bf16", "--checkpointing_steps", "100")
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3] and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert "mixed precision bf16" in proc.stderr
    DDPMExtPipeline.from_pretrained(str(out))


def test_fp16_on_cpu_warns_and_trains_in_fp32(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ddpm_ext.training.loop"):
        trainer = DDPMTrainer(_small_config(tmp_path, mixed_precision="fp16")).setup()
    assert trainer.mixed_precision == "no"
    assert any("not supported on the CPU" in r.getMessage() for r in caplog.records)


def test_two_gloo_processes_split_the_data_and_follow_the_one_process_loss_curve(tmp_path):
    steps = ["--max_train_steps", "4", "--checkpointing_steps", "100", "--log_batch_indices"]
    one = tmp_path / "one"
    _train(one, "--train_batch_size", "8", *steps)
    two = tmp_path / "two"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        SCRIPT, "--output_dir", str(two), *SMALL, "--train_batch_size", "4", *steps,
    ]
    proc = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]

    def indices(folder, rank):
        path = folder / "debug" / f"batch_indices_rank{rank}.jsonl"
        return {r["micro_step"]: r["indices"] for r in map(json.loads, path.read_text().splitlines())}

    rank0, rank1, single = indices(two, 0), indices(two, 1), indices(one, 0)
    assert sorted(rank0) == sorted(rank1) == sorted(single) == [0, 1, 2, 3]
    for m in single:
        assert not set(rank0[m]) & set(rank1[m]), "both ranks trained on the same images"
        assert rank0[m] + rank1[m] == single[m]

    p0 = torch.load(two / "debug" / "params_rank0.pt")
    p1 = torch.load(two / "debug" / "params_rank1.pt")
    assert all(torch.equal(p0[n], p1[n]) for n in p0)

    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3, 4]
    for step in l1:
        assert l2[step] == pytest.approx(l1[step], rel=1e-4, abs=1e-6)
    # Adam divides by √v, so fp32 summation-order noise in near-zero gradients moves weights by up to ~1e-4 here;
    # a different data split moves them by the step size (lr = 1e-3 per step)
    p_single = torch.load(one / "debug" / "params_rank0.pt")
    assert max(float((p_single[n] - p0[n]).abs().max()) for n in p0) < 3e-4


def test_resume_from_the_middle_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    flags = ["--max_train_steps", "6", "--checkpointing_steps", "3", "--use_ema", "--random_flip"]
    full = tmp_path / "full"
    _train(full, *flags)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    _train(resumed, *flags, "--resume_from_checkpoint", "latest")

    a = load_file(full / "checkpoint-6" / "model.safetensors")
    b = load_file(resumed / "checkpoint-6" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ema_a, ema_b = _ema_params(str(full / "checkpoint-6")), _ema_params(str(resumed / "checkpoint-6"))
    assert all(torch.equal(x, y) for x, y in zip(ema_a, ema_b))
    ua = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    ub = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(ua[k], ub[k]) for k in ua)
    assert _losses(resumed) == {s: v for s, v in _losses(full).items() if s > 3}


def test_sigterm_saves_a_complete_checkpoint_that_resumes(tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, SCRIPT, "--output_dir", str(out), *SMALL, "--max_train_steps", "100000",
           "--checkpointing_steps", "100000", "--logging_steps", "1"]
    proc = subprocess.Popen(cmd, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and _losses(out):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    found = list_checkpoints(str(out))
    assert len(found) == 1 and found[0][0] >= 1
    step = found[0][0]
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= set(os.listdir(found[0][1]))
    assert not (out / "model_index.json").exists()  # an interrupted run publishes nothing

    _train(out, "--max_train_steps", str(step + 2), "--checkpointing_steps", "100000",
           "--resume_from_checkpoint", "latest")
    assert [s for s, _ in list_checkpoints(str(out))][-1] == step + 2
    assert max(_losses(out)) == step + 2
    DDPMExtPipeline.from_pretrained(str(out))


def test_checkpoint_from_a_different_model_is_refused_before_training(finished_run, tmp_path):
    config = _small_config(
        tmp_path, variance_type="learned_range", loss_type="hybrid", use_ema=True,
        resume_from_checkpoint=str(finished_run / "checkpoint-6"),
    )
    with pytest.raises(ValueError, match=r"different model configuration[\s\S]*unet\.out_channels"):
        DDPMTrainer(config).setup()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(loss_type="l1"), r"loss_type='l1'.*allowed values: simple, hybrid, vlb"),
        (dict(timestep_sampler="stratified"), r"timestep_sampler='stratified'.*uniform, importance"),
        (dict(prediction_type="x0"), r"prediction_type='x0'.*epsilon, sample, v_prediction"),
        (dict(ddpm_beta_schedule="cosine"), r"ddpm_beta_schedule='cosine'.*squaredcos_cap_v2"),
        (dict(model_preset="ddpm-cifar10", resolution=12), r"resolution=12.*multiple of 8"),
        (dict(variance_type="learned_range"), r"learned_range.*needs loss_type 'hybrid' or 'vlb'"),
        (dict(train_batch_size=4096), r"fewer than one global batch"),
    ],
)
def test_bad_options_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        DDPMTrainer(_small_config(tmp_path, **overrides)).setup()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_empty_image_folder_fails_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no images"):
        DDPMTrainer(_small_config(tmp_path, train_data_dir=str(tmp_path / "empty"))).setup()


def test_command_line_rejects_an_unknown_flag_value(tmp_path):
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--output_dir", str(tmp_path), "--loss_type", "l1"],
        env=_env(), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 2 and "invalid choice: 'l1'" in proc.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        dict(loss_type="hybrid", variance_type="learned_range", timestep_sampler="importance"),
        dict(prediction_type="v_prediction", snr_gamma=5.0, pretensorize="never"),
    ],
)
def test_improved_ddpm_variants_train(tmp_path, overrides):
    trainer = DDPMTrainer(_small_config(tmp_path, **overrides)).setup()
    before = [p.detach().clone() for p in trainer.unet.parameters()]
    trainer.train_steps(2)
    after = list(trainer.unet.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert trainer.pretensorized == (overrides.get("pretensorize") != "never")
    if overrides.get("variance_type") == "learned_range":
        assert trainer.unet.config.out_channels == 2
        assert int(trainer.sampler.state_dict()["loss_counts"].sum()) == 2 * 8


def test_push_uploads_only_the_pipeline_card_and_sample_grid(finished_run, hub_server, hf_token):
    from huggingface_hub import list_repo_files, model_info

    from ddpm_ext.hub import push_output_dir

    repo_id = f"{hub_server.user}/digits-ddpm"
    push_output_dir(str(finished_run), repo_id, token=hf_token, private=True)
    files = set(list_repo_files(repo_id, token=hf_token))
    local = {
        str(p.relative_to(finished_run)) for p in finished_run.rglob("*")
        if p.is_file() and p.parts[len(finished_run.parts)] in ("unet", "scheduler")
    }
    assert local and local <= files
    assert {"model_index.json", "pipeline_ddpm_ext.py", "README.md", "sample_grid.png"} <= files
    assert not [f for f in files if f.startswith(("checkpoint-", "logs/", "samples/", "debug/")) or f.endswith(".jsonl")]
    assert model_info(repo_id, token=hf_token).private


def test_failed_push_says_why_and_leaves_the_output_untouched(finished_run, hub_server):
    from ddpm_ext.hub import HubPushError, push_output_dir

    before = sorted(str(p) for p in finished_run.rglob("*"))
    hub_server.stop()
    with pytest.raises(HubPushError, match=r"user/digits-ddpm.*failed.*local folder is intact"):
        push_output_dir(str(finished_run), "user/digits-ddpm", token="hf_x")
    assert sorted(str(p) for p in finished_run.rglob("*")) == before
