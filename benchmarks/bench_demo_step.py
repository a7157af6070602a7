"""CPU cost of one demo training step (the tiny class-conditional UNet, batch 64) at 8×8 and at 16×16.

    OMP_NUM_THREADS=1 python benchmarks/bench_demo_step.py

Prints the median single-thread process CPU time of a forward + backward + AdamW step over 6 timed steps (after 2
warm-up steps), and of one forward of 128 images (a guided sampling step of 64). Results: benchmarks/RESULTS.md,
"Demo budget".
"""

import statistics
import time

import torch
from diffusers import UNet2DModel

from ddpm_ext.training import unet_config


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for res in (8, 16):
        unet = UNet2DModel(**unet_config("tiny", res, 1, "learned_range", num_classes=10))
        opt = torch.optim.AdamW(unet.parameters(), 1e-3)
        x, t, c = torch.randn(64, 1, res, res), torch.randint(0, 1000, (64,)), torch.randint(0, 11, (64,))
        times = []
        for _ in range(8):
            t0 = time.process_time()
            unet(x, t, class_labels=c).sample.square().mean().backward()
            opt.step()
            opt.zero_grad()
            times.append(time.process_time() - t0)
        with torch.no_grad():
            t0 = time.process_time()
            unet(x.repeat(2, 1, 1, 1), t.repeat(2), class_labels=c.repeat(2))
            forward = time.process_time() - t0
        print(f"{res}×{res}: training step {statistics.median(times[2:]):.3f} CPU-s, forward of 128 {forward:.3f} CPU-s")


if __name__ == "__main__":
    main()
