"""bits_per_dim cost: wall time vs the network evaluations it needs, and the overhead beyond the network.

The bound on N images at T timesteps needs N·T image evaluations of the UNet (one per term) plus the prior. This
times `DDPMExtPipeline.bits_per_dim` on the embedded digits with the tiny UNet, wraps the UNet's forward to time the
network alone, and reports the share of wall time spent outside it (noise draws, q(x_t|x_0), the KL and decoder
terms, bookkeeping) for several `timestep_batch_size` values.

    python benchmarks/bench_likelihood.py                     # 256 digits, T = 1000, 16×16
    python benchmarks/bench_likelihood.py --smoke             # seconds-long wiring check
"""

import argparse
import statistics
import time

import torch
from _timing import ForwardTimer

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
from ddpm_ext.evaluation import reference_digits
from ddpm_ext.training import build_unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--timestep-batch-sizes", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.num_images, args.timesteps, args.resolution, args.repeats = 8, 20, 8, 1
        args.timestep_batch_sizes = [1, 5]
    torch.set_num_threads(args.threads)
    unet = build_unet("tiny", resolution=args.resolution, channels=1, variance_type="learned_range").eval()
    pipe = DDPMExtPipeline(
        unet,
        DDPMExtScheduler(
            num_train_timesteps=args.timesteps, beta_schedule="squaredcos_cap_v2", variance_type="learned_range"
        ),
    )
    pipe.set_progress_bar_config(disable=True)
    timer = ForwardTimer(unet)
    images = reference_digits(args.resolution, split="all")[: args.num_images]
    evaluations = args.num_images * args.timesteps
    print(
        f"# bits_per_dim of {args.num_images} digits ({args.resolution}×{args.resolution}), T = {args.timesteps}:"
        f" {evaluations} image evaluations of the tiny UNet; threads={args.threads}, median of {args.repeats}"
    )
    print("| timestep_batch_size | network calls | wall s | network s | overhead beyond the network | ms / 1k image evals |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in args.timestep_batch_sizes:
        walls, nets = [], []
        for r in range(args.repeats):
            timer.total, timer.calls = 0.0, 0
            start = time.perf_counter()
            pipe.bits_per_dim(images, generator=torch.Generator().manual_seed(r), timestep_batch_size=k)
            walls.append(time.perf_counter() - start)
            nets.append(timer.total)
        wall, net = statistics.median(walls), statistics.median(nets)
        overhead = statistics.median((w - n) / w for w, n in zip(walls, nets))
        print(
            f"| {k} | {timer.calls} | {wall:.1f} | {net:.1f} | {overhead * 100:.1f} % |"
            f" {wall / evaluations * 1e6:.2f} |"
        )


if __name__ == "__main__":
    main()
