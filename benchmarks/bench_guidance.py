"""Class-conditional digits with classifier-free guidance: the fidelity / diversity trade-off, and what the guided
step costs.

Trains two tiny UNets on the embedded digits (16×16) with the same budget and recipe (the demo's: cosine β, hybrid
loss, learned_range variance, EMA), one unconditional and one class-conditional (`class_conditional=True`, label
dropout 0.1). Then:

1. For the conditional model, at each guidance scale: N class-balanced samples (image i is digit i mod 10, the same
   seeds at every scale), their class accuracy under the independent digits classifier (a CNN trained on the digits'
   train split, not on samples) and their Fréchet distance against the 1,797 real digits.
2. The unconditional model's Fréchet distance from N samples with the same steps and seeds: the yardstick the
   target compares against ("FD no worse than the unconditional model's at the same training budget").
3. The guided step's cost: the UNet forward of one conditional batch B, the guided forward (conditional and null
   inputs as one batch of 2B) and two separate forwards of B, medians of repeated timings, as ratios.

Writes `results.json`, `guidance.png` (accuracy and FD against the scale; FD against accuracy) and
`rows_per_digit_by_scale.png` (one row per digit; 4 samples at each scale, left to right) into --out, and prints the
tables.

    python benchmarks/bench_guidance.py --out benchmarks/guidance                 # the full run
    python benchmarks/bench_guidance.py --out benchmarks/guidance --reuse         # evaluate the trained models again
    python benchmarks/bench_guidance.py --smoke --out /tmp/g                      # seconds-long wiring check
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from ddpm_ext import DDPMExtPipeline
from ddpm_ext.evaluation import evaluate_guidance, frechet_distance, plot_guidance, reference_digits, sample_images
from ddpm_ext.reporting import save_image_grid
from ddpm_ext.training import TrainingConfig, train


def train_model(args, conditional: bool) -> str:
    out_dir = os.path.join(args.out, "conditional" if conditional else "unconditional")
    config = TrainingConfig(
        output_dir=out_dir,
        resolution=args.resolution,
        model_preset="tiny",
        max_train_steps=args.train_steps,
        train_batch_size=64,
        learning_rate=2e-3,
        lr_warmup_steps=min(100, args.train_steps // 10),
        use_ema=True,
        ema_max_decay=0.999,
        ddpm_num_steps=args.num_train_timesteps,
        ddpm_beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        loss_type="hybrid",
        ddpm_num_inference_steps=min(args.steps, args.num_train_timesteps),
        checkpointing_steps=10**9,
        save_images_epochs=10**9,
        save_model_epochs=10**9,
        overwrite_output_dir=True,
        logger="none",
        seed=args.seed,
        class_conditional=conditional,
    )
    start = time.perf_counter()
    train(config)
    print(f"trained {'conditional' if conditional else 'unconditional'} model: {args.train_steps} steps in"
          f" {time.perf_counter() - start:.0f} s", flush=True)
    return out_dir


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def guided_step_cost(pipe: DDPMExtPipeline, batch_size: int, repeats: int) -> dict:
    """Seconds of one conditional forward (B), the guided forward (2B in one call) and two separate forwards (B + B)."""
    channels, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    x = torch.randn(batch_size, channels, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    labels = torch.arange(batch_size) % pipe.num_classes
    null = torch.full_like(labels, pipe.null_class_id)
    pipe.unet.eval()
    with torch.no_grad():
        conditional = _median_seconds(lambda: pipe.unet(x, t, class_labels=labels), repeats)
        pipe._class_labels, pipe._guidance_scale = labels, 3.0
        guided = _median_seconds(lambda: pipe._predict(x, t, channels), repeats)
        separate = _median_seconds(
            lambda: (pipe.unet(x, t, class_labels=labels), pipe.unet(x, t, class_labels=null)), repeats
        )
    return {
        "batch_size": batch_size,
        "conditional_forward_s": conditional,
        "guided_forward_s": guided,
        "two_separate_forwards_s": separate,
        "guided_over_conditional": guided / conditional,
        "separate_over_conditional": separate / conditional,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/guidance")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--num-train-timesteps", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50, help="sampling steps")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--scales", default="0,1,2,3,5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20, help="timings per forward (median)")
    parser.add_argument("--reuse", action="store_true", help="evaluate models already trained in --out")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks the wiring, measures nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_steps, args.num_train_timesteps, args.resolution = 4, 20, 8
        args.steps, args.num_samples, args.scales, args.repeats = 2, 20, "0,3", 2
    scales = [float(s) for s in args.scales.split(",")]
    os.makedirs(args.out, exist_ok=True)
    command = "python " + " ".join([os.path.relpath(__file__)] + list(sys.argv[1:] if argv is None else argv))

    folders = {}
    for conditional in (False, True):
        name = "conditional" if conditional else "unconditional"
        folder = os.path.join(args.out, name)
        folders[name] = folder if args.reuse and os.path.isfile(os.path.join(folder, "model_index.json")) else (
            train_model(args, conditional)
        )
    real = reference_digits(args.resolution)

    unconditional = DDPMExtPipeline.from_pretrained(folders["unconditional"])
    unconditional.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    fake = sample_images(unconditional, args.num_samples, args.steps, seed=args.seed)
    unconditional_fd = frechet_distance(real, fake, float_range="[0,1]")
    print(f"unconditional model: Fréchet distance {unconditional_fd:.3f} ({args.num_samples} samples, {args.steps}"
          f" steps, {time.perf_counter() - start:.0f} s)", flush=True)

    pipe = DDPMExtPipeline.from_pretrained(folders["conditional"])
    pipe.set_progress_bar_config(disable=True)
    guided = evaluate_guidance(pipe, real, scales, args.num_samples, steps=args.steps, seed=args.seed)
    labels = torch.arange(10).repeat_interleave(4)
    grids = [sample_images(pipe, len(labels), args.steps, seed=args.seed, class_labels=labels, guidance_scale=scale)
             for scale in scales]
    # one row per digit; the scales side by side (the same seeds in every block of 4 columns)
    side_by_side = torch.stack(grids, dim=1).reshape(10, 4 * len(scales), *grids[0].shape[1:])
    save_image_grid(side_by_side.flatten(0, 1), os.path.join(args.out, "rows_per_digit_by_scale.png"),
                    columns=4 * len(scales))
    cost = [guided_step_cost(pipe, b, args.repeats) for b in (8, 64)]

    results = {
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "train_steps": args.train_steps,
        "resolution": args.resolution,
        "unconditional_frechet_distance": unconditional_fd,
        "guidance": guided,
        "threads": torch.get_num_threads(),
        "guided_step_cost": cost,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot_guidance(guided, os.path.join(args.out, "guidance.png"),
                  title=f"digits 16×16, {args.train_steps} training steps", unconditional_fd=unconditional_fd)

    print(f"\n{command}\n")
    print(f"| guidance scale | class accuracy | Fréchet distance |  (unconditional model: FD {unconditional_fd:.3f};"
          f" the classifier on real held-out digits: {100 * guided['real_accuracy']:.1f} %)")
    print("| ---: | ---: | ---: |")
    for row in guided["guidance"]:
        print(f"| {row['guidance_scale']:g} | {100 * row['class_accuracy']:.1f} % | {row['frechet_distance']:.3f} |")
    for c in cost:
        print(f"\nguided forward (2×{c['batch_size']} in one call) / conditional forward ({c['batch_size']}):"
              f" {c['guided_over_conditional']:.2f}×; two separate forwards: {c['separate_over_conditional']:.2f}×"
              f" ({torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
