"""Scheduler step time: DDPMExtScheduler.step vs diffusers' DDPMScheduler.step, interleaved in one process.

Same config, same inputs and generator seeds, batch (16, 3, 32, 32) fp32 on the CPU. Reports the median per-step
time of each over several interleaved repeats and the median of the per-repeat ratios (ours / diffusers).

    python benchmarks/bench_scheduler.py                 # 50-step loops, 1000-step loop with a trivial model
    python benchmarks/bench_scheduler.py --repeats 15 --threads 1
    python benchmarks/bench_scheduler.py --device cuda           # on a GPU: each step timed to its completion
"""

import argparse
import platform
import statistics
import time

import torch
from _timing import synchronize
from diffusers import DDPMScheduler

from ddpm_ext import DDPMExtScheduler

CONFIGS = {
    "default (linear, epsilon, fixed_small, clip)": {},
    "cosine, v_prediction, fixed_large": dict(
        beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", variance_type="fixed_large"
    ),
    "cosine, epsilon, learned_range": dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range"),
}


def _loop(scheduler, steps, shape, model, seed=0, device="cpu"):
    """Time a full reverse loop of `scheduler.step`; `model` makes the model output (outside the timing)."""
    if steps is not None:
        scheduler.set_timesteps(steps)
    generator = torch.Generator(device).manual_seed(seed)
    x = torch.randn(shape, generator=torch.Generator(device).manual_seed(seed + 1), device=device)
    elapsed = 0.0
    for t in scheduler.timesteps:
        out = model(x)
        synchronize(device)
        start = time.perf_counter()
        x = scheduler.step(out, t, x, generator=generator).prev_sample
        synchronize(device)
        elapsed += time.perf_counter() - start
    return elapsed / len(scheduler.timesteps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch", type=int, nargs=4, default=[16, 3, 32, 32])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    shape = tuple(args.batch)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {where}, threads={args.threads}, batch={shape}")
    print("| config | loop | diffusers µs/step | ddpm-ext µs/step | ratio (median) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, cfg in CONFIGS.items():
        learned = cfg.get("variance_type", "").startswith("learned")
        fixed_out = torch.randn((shape[0], shape[1] * (2 if learned else 1)) + shape[2:], device=device)
        if learned:
            fixed_out[:, shape[1]:].tanh_()
        loops = [("50 steps", 50, lambda x: fixed_out, args.repeats)]
        if name.startswith("default"):
            # a trivial model: the output depends on the sample, as a network's would
            trivial = lambda x: x * 0.1  # noqa: E731
            loops.append(("1000 steps, trivial model", None, trivial, max(3, args.repeats // 3)))
        for loop_name, steps, model, repeats in loops:
            theirs, ours, ratios = [], [], []
            _loop(DDPMScheduler(**cfg), steps, shape, model, device=device)  # warm-up
            _loop(DDPMExtScheduler(**cfg), steps, shape, model, device=device)
            for r in range(repeats):
                a = _loop(DDPMScheduler(**cfg), steps, shape, model, seed=r, device=device)
                b = _loop(DDPMExtScheduler(**cfg), steps, shape, model, seed=r, device=device)
                theirs.append(a)
                ours.append(b)
                ratios.append(b / a)
            print(
                f"| {name} | {loop_name} | {statistics.median(theirs) * 1e6:.0f} | {statistics.median(ours) * 1e6:.0f}"
                f" | {statistics.median(ratios):.2f}× |"
            )
    noise = []
    g = torch.Generator(device).manual_seed(0)
    for _ in range(200):
        synchronize(device)
        start = time.perf_counter()
        torch.randn(shape, generator=g, device=device)
        synchronize(device)
        noise.append(time.perf_counter() - start)
    print(f"\nfloor: one Gaussian draw of that batch takes {statistics.median(noise) * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
