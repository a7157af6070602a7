# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""`python -m ddpm_ext.training [flags]` (and `accelerate launch -m ddpm_ext.training [flags]`): train a DDPM.

Exit status: 0 when training finished; 128 + signal number (130 Ctrl-C, 143 SIGTERM) when a signal stopped it after
saving a checkpoint (resume with --resume_from_checkpoint latest); 2 for invalid options or data; 1 when only the
requested Hub push failed (output_dir is intact); 3 when training diverged (non-finite loss, gradients or weights) or
the disk filled up: nothing was saved from that point on, earlier checkpoints and outputs are intact.
"""

import logging
import os
import sys
from typing import List, Optional

from .checkpoints import DiskFullError, TrainingDivergedError, write_status
from .config import TrainingConfig, build_arg_parser
from .launch import cpu_threads_for_one_process, unconnected_copies_error


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    status = _main(argv, prog)
    write_status(status)
    return status


def _main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    parser = build_arg_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    _shorten_for_tests(args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    refused = unconnected_copies_error()
    if refused is not None:
        if os.environ.get("RANK", "0") == "0":  # one line for the run, not one per copy
            print(f"{parser.prog}: error: {refused}", file=sys.stderr)
        return 2
    threads = cpu_threads_for_one_process()
    if threads is not None:
        import torch

        if torch.get_num_threads() < threads:
            logging.getLogger(__name__).info(
                "one training process on the CPU: using %d threads (accelerate set OMP_NUM_THREADS=1; was %d)",
                threads, torch.get_num_threads(),
            )
            torch.set_num_threads(threads)
    try:  # the cheap checks first, so that a bad flag needs no torch; DDPMTrainer checks everything again
        config = TrainingConfig.from_args(args).validate(check_owners=False)
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    from .loop import DDPMTrainer

    try:
        trainer = DDPMTrainer(config).setup()
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    try:
        result = trainer.fit()
    except (TrainingDivergedError, DiskFullError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 3
    if result.interrupted_by is not None:
        return 128 + int(result.interrupted_by)
    if result.push_error is not None:
        return 1
    return 0


def _shorten_for_tests(args) -> None:
    """Test hook (tests/test_readme.py runs the README's commands as written): DDPM_EXT_MAX_TRAIN_STEPS=N caps the
    run at N optimizer steps and its sample grids at N sampling steps. Not a product option; unset, nothing changes."""
    import os

    cap = os.environ.get("DDPM_EXT_MAX_TRAIN_STEPS")
    if cap:
        args.max_train_steps = min(int(cap), args.max_train_steps or int(cap))
        args.ddpm_num_inference_steps = min(int(cap), args.ddpm_num_inference_steps)


if __name__ == "__main__":
    sys.exit(main())
