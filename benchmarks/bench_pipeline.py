"""Sampling time: DDPMExtPipeline vs stock DDPMPipeline + DDPMScheduler on the same tiny UNet, interleaved.

Also measures the share of each loop spent outside the UNet's forward passes (the loop's own overhead: the
scheduler step, noise draws, bookkeeping), timed by wrapping the UNet's forward.

    python benchmarks/bench_pipeline.py                       # batch 16, 50 and 1000 steps, 3 repeats
    python benchmarks/bench_pipeline.py --repeats 5 --threads 2
    python benchmarks/bench_pipeline.py --device cuda --batch 64 --size 32   # on a GPU

On CUDA the loop times are wall times with a sync at the end of each call; the overhead column then comes from a
second pass whose forward timer syncs around every network call.
"""

import argparse
import statistics
import time

import torch
from _timing import ForwardTimer, synchronize
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
from ddpm_ext.training import build_unet


def tiny_unet(channels: int, size: int) -> UNet2DModel:
    torch.manual_seed(0)
    return build_unet("tiny", resolution=size, channels=channels).eval()


def run(pipe, steps: int, batch: int, timer: ForwardTimer, seed: int, device):
    timer.total = 0.0
    synchronize(device)
    start = time.perf_counter()
    pipe(batch_size=batch, generator=torch.Generator(device).manual_seed(seed), num_inference_steps=steps,
         output_type="pt")
    synchronize(device)
    total = time.perf_counter() - start
    return total, (total - timer.total) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    unet_stock = tiny_unet(args.channels, args.size).to(device)
    unet_ours = tiny_unet(args.channels, args.size).to(device)
    stock = DDPMPipeline(unet_stock, DDPMScheduler())
    ours = DDPMExtPipeline(unet_ours, DDPMExtScheduler())
    timers = {"stock": ForwardTimer(unet_stock), "ours": ForwardTimer(unet_ours)}
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    n_params = sum(p.numel() for p in unet_ours.parameters())
    print(
        f"# tiny UNet {n_params / 1e3:.0f}k params, {args.channels}×{args.size}×{args.size}, batch {args.batch},"
        f" device={device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, threads={args.threads},"
        f" {args.repeats} interleaved repeats, medians"
    )
    print("| steps | stock s | ddpm-ext s | time ratio (ours/stock) | stock overhead | ddpm-ext overhead |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    with torch.no_grad():
        run(stock, 5, args.batch, timers["stock"], 0, device)  # warm-up
        run(ours, 5, args.batch, timers["ours"], 0, device)
        for steps in args.steps:
            rows = {"stock": [], "ours": []}
            for r in range(args.repeats):
                rows["stock"].append(run(stock, steps, args.batch, timers["stock"], r, device))
                rows["ours"].append(run(ours, steps, args.batch, timers["ours"], r, device))
            ratio = statistics.median(o[0] / s[0] for o, s in zip(rows["ours"], rows["stock"]))
            med = {k: (statistics.median(v[0] for v in rows[k]), statistics.median(v[1] for v in rows[k])) for k in rows}
            if cuda:  # the launch-time split is meaningless on CUDA: redo it with syncs around each forward
                for k, pipe in (("stock", stock), ("ours", ours)):
                    timers[k].sync_device = device
                    shares = [run(pipe, steps, args.batch, timers[k], r, device)[1] for r in range(args.repeats)]
                    timers[k].sync_device = None
                    med[k] = (med[k][0], statistics.median(shares))
            print(
                f"| {steps} | {med['stock'][0]:.2f} | {med['ours'][0]:.2f} | {ratio:.3f}× |"
                f" {med['stock'][1] * 100:.1f} % | {med['ours'][1] * 100:.1f} % |"
            )


if __name__ == "__main__":
    main()
