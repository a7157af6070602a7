# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""The run's metrics and sample grids, written through accelerate's trackers.

`MetricsFile` is a small accelerate `GeneralTracker` that is always on (besides `--logger tensorboard|wandb`): every
`accelerator.log(values, step)` appends one JSON line `{"step": step, **values}` to `output_dir/metrics.jsonl`, and
`log_images` writes a sample grid to `samples/step_<step>.png` and `sample_grid.png`. Lines are appended and
flushed one call at a time, so a killed run leaves at most one half-written last line, which readers skip.
"""

import json
import logging
import os
import shutil
import time
from typing import Any, Dict, Optional

import numpy as np
from accelerate.tracking import GeneralTracker

from ..reporting import SAMPLE_GRID, parse_metrics_line

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def tracker_config(values: Dict[str, Any]) -> Dict[str, Any]:
    """The options as the scalar types trackers store as hyperparameters."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


class MetricsFile(GeneralTracker):
    """
    `output_dir/metrics.jsonl` (one JSON object per line) and the sample-grid PNGs, as an accelerate tracker.

    Args:
        output_dir (`str`): the run's folder.
    """

    name = "metrics_jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, METRICS_FILE)

    @property
    def tracker(self) -> str:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        """The options are in the checkpoints and the model card; the metrics file holds only metrics."""

    def log(self, values: dict, step: Optional[int] = None, **kwargs) -> None:
        """Append `{"step": step, **values}` as one line."""
        row = {"step": step, **values} if step is not None else dict(values)
        os.makedirs(self.output_dir, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def log_images(self, values: dict, step: Optional[int] = None, **kwargs) -> None:
        """Save the first image of each entry (uint8 [N, H, W, C]) as `samples/step_<step>.png` and copy it to
        `sample_grid.png` (the picture the model card shows)."""
        from PIL import Image

        folder = os.path.join(self.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        for images in values.values():
            image = np.asarray(images[0])
            path = os.path.join(folder, f"step_{step:07d}.png")
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
            shutil.copyfile(path, os.path.join(self.output_dir, SAMPLE_GRID))

    def reset(self) -> None:
        """A new run: remove the previous run's metrics."""
        if os.path.exists(self.path):
            os.remove(self.path)

    def truncate(self, step: int) -> None:
        """A resumed run: drop the rows past `step` (and any half-written line), so the steps redone are not
        listed twice."""
        if not os.path.isfile(self.path):
            return
        rows = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                row = parse_metrics_line(line)
                if row is not None and row.get("step", 0) <= step:
                    rows.append(json.dumps(row) + "\n")
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.writelines(rows)


def format_duration(seconds: float) -> str:
    """`seconds` as "2 h 05 min", "7 min 30 s" or "45 s"."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


class StepTimer:
    """
    The time estimate printed at the start of a run: times `measure` optimizer steps after the first one (which pays
    for warm-up: allocations, kernel selection, compilation) and extrapolates to the remaining steps.

    Args:
        start_step (`int`): the step the run starts (or resumes) at.
        max_steps (`int`): the last step.
        measure (`int`): steps to time.
        sync (`callable`, *optional*): waits for the device (so queued GPU work is counted); called twice in all.
    """

    def __init__(self, start_step: int, max_steps: int, measure: int = 5, sync=None):
        self.first = start_step + 1
        self.last = start_step + 1 + measure
        self.max_steps = max_steps
        self.sync = sync or (lambda: None)
        self._t0: Optional[float] = None

    def after_step(self, step: int) -> Optional[str]:
        """Call after each optimizer step; returns the estimate line once, at step `start_step + 1 + measure`."""
        if step == self.first and self.last < self.max_steps:
            self.sync()
            self._t0 = time.perf_counter()
        elif step == self.last and self._t0 is not None:
            self.sync()
            per_step = (time.perf_counter() - self._t0) / (self.last - self.first)
            remaining = self.max_steps - step
            return (f"estimated time: {format_duration(per_step * remaining)} for the remaining {remaining:,} steps"
                    f" ({per_step:.3g} s/step over steps {self.first + 1}–{self.last}; evaluations, sample grids and"
                    " checkpoints come on top)")
        return None
