#!/usr/bin/env python
# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Train a DDPM / Improved-DDPM with accelerate (flags: train_unconditional.py's names, plus ddpm-ext's).

    accelerate launch examples/train_ddpm.py --resolution 16 --use_ema --output_dir ddpm-digits
    python examples/train_ddpm.py --loss_type hybrid --variance_type learned_range --timestep_sampler importance

On a CPU machine a real 2-process run is
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no examples/train_ddpm.py ...

Exit status: 0 when training finished; 128 + signal number (130 Ctrl-C, 143 SIGTERM) when a signal stopped it after
saving a checkpoint (resume with --resume_from_checkpoint latest); 2 for invalid options or data; 1 when only the
requested Hub push failed (output_dir is intact).
"""

import logging
import sys

from ddpm_ext.training import DDPMTrainer, TrainingConfig, build_arg_parser


def main(argv=None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        trainer = DDPMTrainer(TrainingConfig.from_args(args)).setup()
    except ValueError as err:
        print(f"train_ddpm.py: error: {err}", file=sys.stderr)
        return 2
    result = trainer.fit()
    if result.interrupted_by is not None:
        return 128 + int(result.interrupted_by)
    if result.push_error is not None:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
