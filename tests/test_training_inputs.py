"""Training inputs checked before the first step, and what a training run publishes (issue 14, items 2 and 8).

Each bad input gives one line and exit status 2 from both entry points, `ddpm-ext train --no-launch` and
`python examples/train_ddpm.py` (in process here, through their `main`; the offline case in real subprocesses,
since `datasets` reads the offline switches at import). Runs are tiny: the digits at 8×8, T = 20, 2 steps.
"""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ddpm_ext.cli import main as cli_main
from ddpm_ext.training import DDPMTrainer, TrainingConfig, list_checkpoints, train
from ddpm_ext.training.__main__ import main as script_main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "examples" / "train_ddpm.py")
SMALL = ["--ddpm_num_steps", "20", "--ddpm_num_inference_steps", "5", "--lr_warmup_steps", "0", "--logger", "none",
         "--train_batch_size", "8", "--eval_batch_size", "4", "--resolution", "8", "--max_train_steps", "2"]
LAYOUT = {"model_index.json", "pipeline_ddpm_ext.py", "scheduler/scheduler_config.json",
          "scheduler/scheduling_ddpm_ext.py", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"}


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def _config(tmp_path: Path, **overrides) -> TrainingConfig:
    values = dict(output_dir=str(tmp_path / "run"), ddpm_num_steps=20, ddpm_num_inference_steps=5, lr_warmup_steps=0,
                  train_batch_size=8, eval_batch_size=4, logger="none", resolution=8, max_train_steps=2)
    values.update(overrides)
    return TrainingConfig(**values)


# ------------------------------------------------------------------------------------------------ item 2
def test_training_push_to_hub_uploads_exactly_the_pipeline_card_and_grid(tmp_path, hub_server, hf_token):
    from huggingface_hub import list_repo_files

    out = tmp_path / "run"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "operator.log").write_text("started by hand\n")
    (out / "core_dump_debug.txt").write_text("stray debug file\n")
    result = train(_config(tmp_path, checkpointing_steps=1, log_batch_indices=True, push_to_hub=True,
                           hub_model_id="tester/ddpm-trained", hub_token=hf_token))

    assert result.push_error is None and result.hub_url
    local = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert list_checkpoints(str(out)) and {"metrics.jsonl", "debug/params_rank0.pt", "core_dump_debug.txt"} <= local
    published = LAYOUT | {"README.md", "sample_grid.png"}
    assert published <= local
    assert set(list_repo_files("tester/ddpm-trained", token=hf_token)) == published | {".gitattributes"}


# ------------------------------------------------------------------------------------- item 8: the Hub
@pytest.mark.parametrize("hub_model_id", ["bad id!!/x y", "tester/--x", "a/b/c"])
def test_invalid_hub_model_id_is_refused_before_any_request_or_file(tmp_path, hub_server, hub_model_id):
    with pytest.raises(ValueError, match=r"hub_model_id=.* is not a valid Hub repo id; allowed: 'name' or"):
        DDPMTrainer(_config(tmp_path, push_to_hub=True, hub_model_id=hub_model_id)).setup()
    assert hub_server.requests == [] and not (tmp_path / "run").exists()


def test_output_dir_name_that_is_no_repo_id_is_refused_when_pushing_without_hub_model_id(tmp_path, hub_server):
    with pytest.raises(ValueError, match=r"hub_model_id \(unset, so output_dir's name\)='my run' is not a valid"):
        DDPMTrainer(_config(tmp_path, output_dir=str(tmp_path / "my run"), push_to_hub=True)).setup()
    assert hub_server.requests == []


def test_unreachable_hub_is_found_before_training(tmp_path, hub_server, hf_token):
    from huggingface_hub import constants

    hub_server.stop()
    with pytest.raises(ValueError) as exc:
        DDPMTrainer(_config(tmp_path, push_to_hub=True, hub_model_id="tester/x", hub_token=hf_token)).setup()
    message = str(exc.value)
    assert "\n" not in message and "cannot create or reach the Hub repo 'tester/x'" in message
    assert constants.ENDPOINT in message and "ConnectError" in message
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_missing_token_is_found_before_training_and_a_good_setup_creates_the_repo(tmp_path, hub_server, hf_token):
    with pytest.raises(ValueError, match=r"cannot create or reach the Hub repo 'tester/x'.*401"):
        DDPMTrainer(_config(tmp_path, push_to_hub=True, hub_model_id="tester/x")).setup()  # no token anywhere
    with pytest.raises(KeyError):
        hub_server.repo("tester/x")

    trainer = DDPMTrainer(_config(tmp_path, push_to_hub=True, hub_model_id="tester/x", hub_token=hf_token)).setup()
    assert hub_server.repo("tester/x")["private"] is False and trainer.is_setup
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # reached the Hub, trained nothing yet


# ----------------------------------------------------------------------------- item 8: data and output_dir
def _empty_parquet(path: Path) -> Path:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([], type=image)}), path)
    return path


def _cases(tmp_path: Path) -> dict:
    (tmp_path / "a_file").write_text("not a folder")
    return {
        "empty_parquet": (["--train_data_dir", str(_empty_parquet(tmp_path / "empty.parquet")),
                           "--output_dir", str(tmp_path / "out")],
                          f"train_data_dir='{tmp_path / 'empty.parquet'}' holds parquet files with 0 rows"),
        "output_dir_file": (["--output_dir", str(tmp_path / "a_file")],
                            f"output_dir='{tmp_path / 'a_file'}' is an existing file; allowed:"),
        "output_dir_below_file": (["--output_dir", str(tmp_path / "a_file" / "run")],
                                  f"lies below the file '{tmp_path / 'a_file'}'"),
        "bad_hub_model_id": (["--output_dir", str(tmp_path / "out"), "--push_to_hub", "--hub_model_id", "bad id!!/x y"],
                             "hub_model_id='bad id!!/x y' is not a valid Hub repo id"),
        "unreachable_hub": (["--output_dir", str(tmp_path / "out"), "--push_to_hub", "--hub_model_id", "tester/x",
                             "--hub_token", "hf_x"], "cannot create or reach the Hub repo 'tester/x'"),
    }


def _run_cli(argv):
    return cli_main(["train", "--no-launch", *argv])


def _run_script(argv):
    return script_main(argv, prog="train_ddpm.py")


@pytest.mark.parametrize("case", ["empty_parquet", "output_dir_file", "output_dir_below_file", "bad_hub_model_id",
                                  "unreachable_hub"])
@pytest.mark.parametrize("entry", [_run_cli, _run_script], ids=["ddpm-ext_train", "train_ddpm.py"])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, entry, case):
    # no hub_server fixture: nothing listens at HF_ENDPOINT, so the Hub is unreachable
    argv, message = _cases(tmp_path)[case]
    assert entry([*argv, *SMALL]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert message in line and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_uncached_dataset_offline_gives_one_line_and_exit_2_from_both_commands(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    argv = ["--dataset_name", "someone/not-cached", "--output_dir", str(tmp_path / "out"), *SMALL]
    for command in ([sys.executable, SCRIPT], ["ddpm-ext", "train", "--no-launch"]):
        proc = subprocess.run([*command, *argv], env=env, capture_output=True, text=True, timeout=900)
        (line,) = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert "dataset_name='someone/not-cached' could not be loaded (offline:" in line
        assert "train_data_dir" in line  # what is allowed instead
    assert not (tmp_path / "out").exists()
