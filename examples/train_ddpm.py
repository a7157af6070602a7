#!/usr/bin/env python
# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Train a DDPM / Improved-DDPM with accelerate (flags: train_unconditional.py's names, plus ddpm-ext's).

    accelerate launch examples/train_ddpm.py --resolution 16 --use_ema --output_dir ddpm-digits
    python examples/train_ddpm.py --loss_type hybrid --variance_type learned_range --timestep_sampler importance

On a CPU machine a real 2-process run is
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no examples/train_ddpm.py ...

The logic lives in the package (`ddpm_ext.training`); this file is the command line only. Exit status: 0 when
training finished; 128 + signal number (130 Ctrl-C, 143 SIGTERM) after a signal saved a checkpoint; 2 for invalid
options or data; 1 when only the requested Hub push failed (output_dir is intact); 3 when training diverged or the
disk filled up (nothing saved from that point, earlier checkpoints intact).
"""

import sys

from ddpm_ext.training.__main__ import main

if __name__ == "__main__":
    sys.exit(main(prog="train_ddpm.py"))
