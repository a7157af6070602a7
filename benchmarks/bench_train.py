"""Training throughput: ddpm-ext's training step vs a stock diffusers loop doing the same work, interleaved.

The stock loop is written the way diffusers' `train_unconditional.py` does it: a `datasets.Dataset` with a
per-image PIL transform (`set_transform`) behind a shuffled `DataLoader`, everything through
`accelerator.prepare`, `DDPMScheduler.add_noise`, `UNet2DModel`, MSE loss, `accelerator.accumulate`, gradient
clipping at 1.0, AdamW (torch's default implementation), diffusers' `EMAModel` (default, no foreach), and
`loss.detach().item()` + `accelerator.log` every step. ddpm-ext runs `DDPMTrainer` on the same UNet config, batch,
precision and data (the digits), with logging every `--log_every` steps. Both sides train with EMA.

    python benchmarks/bench_train.py --resolution 16 --batch_size 32 --steps 20 --repeats 5
    python benchmarks/bench_train.py --preset ddpm-cifar10 --resolution 32 --batch_size 128 --mixed_precision bf16

Prints images/s (median of `--repeats` interleaved timings) and the ratio ddpm-ext / stock. On CUDA each timing
ends with a device sync, and the peak GPU memory of each side's steps is printed; run with `--sides ours` (or
`stock`) for a peak that excludes the other side's weights and optimizer state.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from _timing import synchronize
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ddpm_ext.data import load_digits_dataset, make_transform
from ddpm_ext.training import DDPMTrainer, TrainingConfig, unet_config


class StockLoop:
    """train_unconditional.py's per-step work, minus the argument parsing and file output."""

    def __init__(self, args, accelerator: Accelerator):
        self.accelerator = accelerator
        self.model = UNet2DModel(**unet_config(args.preset, args.resolution, 1))
        self.ema = EMAModel(self.model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75,
                            model_cls=UNet2DModel, model_config=self.model.config)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6,
                                      eps=1e-8)
        dataset = load_digits_dataset()
        dataset.set_transform(make_transform(args.resolution, 1, center_crop=True, random_flip=args.random_flip))
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0,
                                             drop_last=True)
        lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=10**6)
        self.model, self.optimizer, self.loader, self.lr_scheduler = accelerator.prepare(
            self.model, optimizer, loader, lr_scheduler
        )
        self.iterator = iter(self.loader)
        self.ema.to(accelerator.device)

    def _batch(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def steps(self, n: int) -> None:
        accelerator = self.accelerator
        for _ in range(n):
            batch = self._batch()
            clean_images = batch["pixel_values"]
            noise = torch.randn(clean_images.shape, dtype=clean_images.dtype, device=clean_images.device)
            bsz = clean_images.shape[0]
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,),
                                      device=clean_images.device).long()
            noisy_images = self.noise_scheduler.add_noise(clean_images, noise, timesteps)
            with accelerator.accumulate(self.model):
                model_output = self.model(noisy_images, timesteps).sample
                loss = F.mse_loss(model_output.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad()
            if accelerator.sync_gradients:
                self.ema.step(self.model.parameters())
            logs = {"loss": loss.detach().item(), "lr": self.lr_scheduler.get_last_lr()[0],
                    "step": 0, "ema_decay": self.ema.cur_decay_value}
            accelerator.log(logs, step=0)


class OursLoop:
    def __init__(self, args, out_dir: str):
        config = TrainingConfig(
            output_dir=out_dir, model_preset=args.preset, resolution=args.resolution, train_batch_size=args.batch_size,
            logger="none", use_ema=True, random_flip=args.random_flip, center_crop=True,
            use_fused_adam=args.fused_adam, ema_foreach=args.ema_foreach, channels_last=args.channels_last,
            pretensorize="always" if args.pretensorize else "never", compile=args.compile,
            logging_steps=args.log_every, mixed_precision=args.mixed_precision,
        )
        self.trainer = DDPMTrainer(config).setup()

    def steps(self, n: int) -> None:
        self.trainer.train_steps(n)  # gathers and fetches the losses every `log_every` steps


def _time(loop, steps: int, device: torch.device, peaks: list, clock=time.perf_counter) -> float:
    cuda = device.type == "cuda"
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = clock()
    loop.steps(steps)
    synchronize(device)
    elapsed = clock() - start
    if cuda:
        peaks.append(torch.cuda.max_memory_allocated(device))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="steps per timing")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--fused_adam", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ema_foreach", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--pretensorize", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--log_every", type=int, default=10, help="ddpm-ext host sync every N steps (1 = every step)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--sides", default="both", choices=["both", "stock", "ours"], help="which loops to run")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the timings, profile N steps of each side with torch.profiler and print the top ops")
    parser.add_argument("--profile_rows", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="wall: time.perf_counter; cpu: this process's CPU time (time.process_time), which other"
                             " load on a shared machine disturbs less; with --threads 1 it is one core's busy time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    device = accelerator.device
    names = ["stock", "ours"] if args.sides == "both" else [args.sides]
    with tempfile.TemporaryDirectory() as out_dir:
        loops = {}
        if "stock" in names:
            loops["stock"] = StockLoop(args, accelerator)
        if "ours" in names:
            loops["ours"] = OursLoop(args, out_dir)
        for loop in loops.values():
            loop.steps(args.warmup)
        clocks = {"wall": time.perf_counter, "cpu": time.process_time}
        times = {name: [] for name in names}
        peaks = {name: [] for name in names}
        for _ in range(args.repeats):
            for name in names:  # interleaved: stock, ours, stock, ours, ...
                times[name].append(_time(loops[name], args.steps, device, peaks[name], clocks[args.clock]))
        profiles = {name: _profile(loops[name], args.profile, args.profile_rows) for name in names} if args.profile else {}
    images = args.steps * args.batch_size
    ips = {name: images / statistics.median(times[name]) for name in names}
    model = loops["stock"].model if "stock" in loops else loops["ours"].trainer.unet
    params = sum(p.numel() for p in model.parameters())
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f"{device}"
    print(f"clock={args.clock} device={where} threads={torch.get_num_threads()} preset={args.preset} ({params / 1e6:.2f}M)"
          f" resolution={args.resolution} batch={args.batch_size} precision={args.mixed_precision}")
    print(f"levers: fused_adam={args.fused_adam} ema_foreach={args.ema_foreach} channels_last={args.channels_last}"
          f" pretensorize={args.pretensorize} log_every={args.log_every} compile={args.compile}")
    labels = {"stock": "stock diffusers loop", "ours": "ddpm-ext DDPMTrainer"}
    for name in names:
        memory = f", peak GPU memory {max(peaks[name]) / 2**30:.2f} GiB" if peaks[name] else ""
        print(f"{labels[name]}: {ips[name]:8.4g} images/s{memory}  (runs: {[float(f'{images / t:.4g}') for t in times[name]]})")
    if len(names) == 2:
        print(f"ratio ddpm-ext / stock: {ips['ours'] / ips['stock']:.2f}x")
    for name, table in profiles.items():
        print(f"\nprofile, {labels[name]}, {args.profile} steps (self CPU time, top ops):\n{table}")


def _profile(loop, steps: int, rows: int) -> str:
    """torch.profiler over `steps` steps: the ops with the most self CPU time, then the share of the top-level
    forward (aten ops under `UNet2DModel`), backward and optimizer/EMA buckets (by name)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("train_steps"):
            loop.steps(steps)
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
    total = sum(e.self_cpu_time_total for e in averages)
    buckets = {"convolution (fwd+bwd)": ("convolution", "conv"), "matmul/linear/bmm (fwd+bwd)": ("mm", "addmm", "bmm", "linear", "matmul"),
               "group_norm (fwd+bwd)": ("group_norm",), "optimizer + EMA (fused/foreach)": ("_fused_adam", "adamw", "_foreach", "addcdiv", "lerp"),
               "elementwise/other": ()}
    shares = dict.fromkeys(buckets, 0.0)
    for e in averages:
        key = e.key.lower()
        for bucket, needles in buckets.items():
            if needles and any(n in key for n in needles):
                shares[bucket] += e.self_cpu_time_total
                break
        else:
            shares["elementwise/other"] += e.self_cpu_time_total
    summary = ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in shares.items())
    return f"{table}\nself CPU time by bucket: {summary}"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
