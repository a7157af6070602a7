"""Seconds-long smoke runs of every benchmark script (the benchmarks themselves are run by hand, see RESULTS.md)."""

import json
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
        ("bench_train.py", ["--resolution", "8", "--batch_size", "4", "--steps", "1", "--warmup", "1", "--repeats", "1",
                            "--clock", "cpu", "--threads", "1", "--profile", "1"], "self CPU time by bucket: convolution"),
        ("bench_demo_step.py", [], "8×8: training step"),
    ],
)
def test_benchmark_smoke(script, args, expect, tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=1800, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert expect in result.stdout


def test_quality_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH / "bench_quality.py"), "--smoke", "--recipes", "ddpm", "iddpm", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "results.json").is_file() and (tmp_path / "fd_vs_steps.png").is_file()
    assert "| iddpm |" in result.stdout


def test_guidance_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH / "bench_guidance.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["guidance_scale"] for r in results["guidance"]["guidance"]] == [0.0, 3.0]
    assert [c["batch_size"] for c in results["guided_step_cost"]] == [8, 64]
    assert all(c["guided_forward_s"] > 0 for c in results["guided_step_cost"])
    assert (tmp_path / "guidance.png").is_file() and (tmp_path / "rows_per_digit_by_scale.png").is_file()
    assert "| guidance scale | class accuracy | Fréchet distance |" in result.stdout


def test_quality_claims_need_two_standard_errors_or_a_ten_percent_gap():
    sys.path.insert(0, str(BENCH))
    try:
        from bench_quality import claims
    finally:
        sys.path.remove(str(BENCH))

    def recipe(bpd, se, fds):
        return {"bits_per_dim": bpd, "bits_per_dim_stderr": se,
                "frechet_distance": [{"steps": s, "frechet_distance": f} for s, f in zip((10, 1000), fds)]}

    results = {"steps": [10, 1000], "recipes": {
        "ddpm": recipe(2.50, 0.01, (40.0, 10.0)),         # FD ratio 4.0
        "ddpm-cosine": recipe(2.10, 0.01, (20.0, 10.0)),  # FD ratio 2.0
        "iddpm": recipe(2.09, 0.01, (19.0, 10.0)),        # FD ratio 1.9: within 10 % of 2.0
    }}
    lines = claims(results)
    by_start = {line.split(":")[0]: line for line in lines}
    assert by_start["cosine beats linear in bits/dim (both L_simple, fixed variance)"].endswith("— held")
    assert "not separated" in by_start["hybrid + learned variance beats L_simple in bits/dim (both cosine)"]
    assert "not separated (within 10%)" in by_start["learned variances keep quality at 10 steps"]
    results["recipes"]["iddpm"] = recipe(2.20, 0.01, (30.0, 10.0))  # worse beyond 2 se and beyond 10 %
    by_start = {line.split(":")[0]: line for line in claims(results)}
    assert "not held (reversed)" in by_start["hybrid + learned variance beats L_simple in bits/dim (both cosine)"]
    assert by_start["learned variances keep quality at 10 steps"].endswith("— not held")


@pytest.mark.slow  # ~7 min: trains and evaluates both recipes (`python -m pytest -q -m slow`; CI runs it)
def test_vs_stock_benchmark_smoke(tmp_path):
    """The whole time-to-quality chain (data, both recipes side by side, snapshots, evaluation, report) at toy sizes."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "bench_vs_stock.py"), "smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for data in ("digits", "shapes"):
        for recipe in ("stock", "ext"):
            for budget in ("0.02", "0.04"):
                folder = tmp_path / "runs" / data / recipe / f"budget_{budget}"
                snapshot = json.loads((folder / "snapshot.json").read_text())
                assert snapshot["cpu_s"] >= float(budget) * 60 and snapshot["steps"] >= 1
                evaluation = json.loads((folder / "eval.json").read_text())
                assert set(evaluation["fd"]) == {"2", "5"}
                assert all(row["nfe_per_image"] == int(s) for s, row in evaluation["fd"].items())
                assert evaluation["bits_per_dim"]["mean"] > 0
        # the stock model's UNet predicts ε only; the ddpm-ext model's predicts ε and the variance interpolation
        stock = json.loads((tmp_path / "runs" / data / "stock" / "budget_0.04" / "config.json").read_text())
        ext = json.loads((tmp_path / "runs" / data / "ext" / "budget_0.04" / "config.json").read_text())
        assert ext["out_channels"] == 2 * stock["out_channels"]
        assert {k: v for k, v in ext.items() if k not in ("out_channels", "_diffusers_version")} == {
            k: v for k, v in stock.items() if k not in ("out_channels", "_diffusers_version")}
    assert (tmp_path / "vs_stock.png").is_file()
    table = (tmp_path / "table.md").read_text()
    assert "| stock | 0.04 |" in table and "### digits, lr 0.0001, warm-up 500" in table
    # --learning_rate / --lr_warmup_steps / --run_name: both recipes with another optimizer setting, in their own folder
    assert "### digits-lr2e-3, lr 0.002, warm-up 10" in table
    for recipe in ("stock", "ext"):
        folder = tmp_path / "runs" / "digits-lr2e-3" / recipe / "budget_0.02"
        snapshot = json.loads((folder / "snapshot.json").read_text())
        assert (snapshot["learning_rate"], snapshot["lr_warmup_steps"]) == (2e-3, 10)
        assert set(json.loads((folder / "eval.json").read_text())["fd"]) == {"2"}
    raw = json.loads((tmp_path / "results_digits-lr2e-3.json").read_text())
    assert {row["info"]["learning_rate"] for rows in raw.values() for row in rows} == {2e-3}


def test_vs_stock_time_to_quality_crossing():
    sys.path.insert(0, str(BENCH))
    try:
        from bench_vs_stock import crossing, draw_shapes
    finally:
        sys.path.remove(str(BENCH))
    points = [(2, 40.0), (5, 20.0), (10, 10.0)]
    assert crossing(points, 20.0) == 5
    assert crossing(points, 15.0) == 7.5  # linear between the 5- and 10-minute budgets
    assert crossing(points, 50.0) == 2
    assert crossing(points, 5.0) is None
    a, labels = draw_shapes(6, 32, seed=0)
    b, _ = draw_shapes(6, 32, seed=0)
    assert a.shape == (6, 32, 32, 3) and a.dtype.name == "uint8" and (a == b).all()
    assert labels.min() >= 0 and labels.max() < 18
