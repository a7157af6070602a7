# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Fast tests of the training loop's parts that need no training: the metrics tracker, the time estimate, the batch
schedule and the step counter."""

import json
import re

import numpy as np
import pytest
from accelerate import Accelerator
from PIL import Image

from ddpm_ext.training import tracking
from ddpm_ext.training.batches import BatchSchedule
from ddpm_ext.training.checkpoints import StepCounter
from ddpm_ext.training.tracking import MetricsFile, StepTimer, format_duration


def test_metrics_tracker_writes_one_json_line_per_accelerator_log_and_truncates_on_resume(tmp_path):
    tracker = MetricsFile(str(tmp_path))
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("t", config={"seed": 0})
    accelerator.log({"loss": 0.5, "grad_norm": 1.0}, step=1)
    accelerator.log({"loss": 0.25, "grad_norm": 2.0}, step=2)
    accelerator.log({"bits_per_dim": 7.5}, step=2)
    path = tmp_path / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 0.5, "grad_norm": 1.0}, {"step": 2, "loss": 0.25, "grad_norm": 2.0},
                    {"step": 2, "bits_per_dim": 7.5}]
    with open(path, "a") as fh:
        fh.write('{"step": 3, "lo')  # a run killed mid-write
    tracker.truncate(1)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:1]
    tracker.reset()
    assert not path.exists()
    accelerator.end_training()


@pytest.mark.parametrize("channels", [1, 3])
def test_metrics_tracker_saves_the_sample_grid_through_log_images(tmp_path, channels):
    tracker = MetricsFile(str(tmp_path))
    grid = np.random.default_rng(0).integers(0, 256, (1, 6, 10, channels), dtype=np.uint8)
    tracker.log_images({"samples": grid}, step=42)
    saved = np.asarray(Image.open(tmp_path / "samples" / "step_0000042.png"))
    np.testing.assert_array_equal(saved, grid[0, ..., 0] if channels == 1 else grid[0])
    assert (tmp_path / "sample_grid.png").read_bytes() == (tmp_path / "samples" / "step_0000042.png").read_bytes()


def test_step_timer_skips_the_first_step_and_extrapolates_the_rest(monkeypatch):
    clock = iter([100.0, 102.0])  # steps 2..6 (5 steps) take 2 s → 0.4 s/step
    monkeypatch.setattr(tracking.time, "perf_counter", lambda: next(clock))
    synced = []
    timer = StepTimer(start_step=10, max_steps=1006, measure=5, sync=lambda: synced.append(1))
    lines = [timer.after_step(step) for step in range(11, 20)]
    assert lines[:5] == [None] * 5 and lines[6:] == [None] * 3 and len(synced) == 2
    assert lines[5].startswith("estimated time: 6 min 36 s for the remaining 990 steps (0.4 s/step over steps 12–16")


def test_step_timer_says_nothing_for_a_run_shorter_than_the_measurement():
    timer = StepTimer(start_step=0, max_steps=4, measure=5)
    assert [timer.after_step(step) for step in range(1, 5)] == [None] * 4


@pytest.mark.parametrize("seconds, text", [(45.2, "45 s"), (450, "7 min 30 s"), (7500, "2 h 05 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_two_processes_split_each_global_batch_of_one_permutation_per_epoch():
    one = BatchSchedule(num_rows=10, batch_size=4, num_processes=1, process_index=0, seed=3)
    halves = [BatchSchedule(num_rows=10, batch_size=2, num_processes=2, process_index=r, seed=3) for r in (0, 1)]
    assert one.micro_steps_per_epoch == 2  # the incomplete last global batch is dropped
    for m in range(5):
        assert one.indices(m).tolist() == halves[0].indices(m).tolist() + halves[1].indices(m).tolist()
    assert one.indices(0).tolist() != one.indices(2).tolist()  # a new epoch, a new permutation


def test_step_counter_round_trips_through_its_state_dict():
    counter = StepCounter()
    counter.global_step = 7
    other = StepCounter()
    other.load_state_dict(counter.state_dict())
    assert other.global_step == 7


def test_a_run_prints_its_step_count_time_estimate_and_held_out_bits_per_dim_with_progress_bars(tmp_path, capsys):
    from ddpm_ext.training import TrainingConfig, train

    config = TrainingConfig(
        output_dir=str(tmp_path / "run"), ddpm_num_steps=10, ddpm_num_inference_steps=3, lr_warmup_steps=0,
        train_batch_size=8, eval_batch_size=4, logger="none", resolution=8, max_train_steps=8, logging_steps=4,
        eval_nll_steps=8, eval_nll_num_images=4, checkpointing_steps=100,
    )
    result = train(config)
    captured = capsys.readouterr()
    assert "training 8 steps (0 → 8), 1 process(es) × batch 8 × accumulation 1" in captured.err
    assert "estimated time: " in captured.err and "for the remaining 2 steps" in captured.err
    assert f"step 8: held-out bits/dim {result.final_bits_per_dim:.4f} (4 images" in captured.out
    # the bars are drawn (leave=False clears them at the end, so their last state need not be 100 %)
    assert re.search(r"held-out bits/dim:\s+\d+%", captured.err) and re.search(r"sample grid:\s+\d+%", captured.err)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))
    assert rows[-1] == {"step": 8, "bits_per_dim": result.final_bits_per_dim}
