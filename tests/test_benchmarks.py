"""Seconds-long smoke runs of every benchmark script (the benchmarks themselves are run by hand, see RESULTS.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    "script,args,expect",
    [
        ("bench_scheduler.py", ["--repeats", "1", "--batch", "2", "1", "4", "4"], "ratio (median)"),
        ("bench_pipeline.py", ["--repeats", "1", "--steps", "2", "--batch", "2", "--size", "8"], "time ratio"),
        ("bench_likelihood.py", ["--smoke"], "overhead beyond the network"),
        ("bench_train.py", ["--resolution", "8", "--batch_size", "4", "--steps", "2", "--warmup", "1", "--repeats", "1"], "ratio"),
    ],
)
def test_benchmark_smoke(script, args, expect, tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert expect in result.stdout


def test_quality_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH / "bench_quality.py"), "--smoke", "--recipes", "ddpm", "iddpm", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "results.json").is_file() and (tmp_path / "fd_vs_steps.png").is_file()
    assert "| iddpm |" in result.stdout
