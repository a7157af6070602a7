# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""`python -m ddpm_ext.training [flags]` (and `accelerate launch -m ddpm_ext.training [flags]`): train a DDPM.

Exit status: 0 when training finished; 128 + signal number (130 Ctrl-C, 143 SIGTERM) when a signal stopped it after
saving a checkpoint (resume with --resume_from_checkpoint latest); 2 for invalid options or data; 1 when only the
requested Hub push failed (output_dir is intact).
"""

import logging
import sys
from typing import List, Optional

from .config import TrainingConfig, build_arg_parser
from .loop import DDPMTrainer


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    parser = build_arg_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    _shorten_for_tests(args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        trainer = DDPMTrainer(TrainingConfig.from_args(args)).setup()
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    result = trainer.fit()
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
