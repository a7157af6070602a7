# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""What a run or a published model shows a reader: image grids, the training curves and the model card (README.md).

Used by training (the end-of-run outputs), `ddpm-ext sample` / `demo`, the benchmarks and `ddpm_ext.hub` (the card of
a pushed pipeline). Imports nothing heavy at module level.
"""

import json
import logging
import math
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_GRID = "sample_grid.png"
CARD_TAGS = ("ddpm-ext", "diffusers", "unconditional-image-generation", "ddpm")
CONDITIONAL_CARD_TAGS = ("ddpm-ext", "diffusers", "class-conditional", "classifier-free-guidance", "ddpm")
SCHEDULER_CARD_KEYS = ("num_train_timesteps", "beta_schedule", "prediction_type", "variance_type", "clip_sample")


# ---------------------------------------------------------------------- image grids
def image_grid(images, border: int = 0, min_size: int = 0, columns: Optional[int] = None) -> np.ndarray:
    """
    Images as one grid, row-major with `columns` columns (default ⌈√N⌉: near-square) and ⌈N / columns⌉ rows
    (diffusers' `make_image_grid` needs rows × cols = N exactly and draws no separators, hence this one).

    Args:
        images: a pipeline's output: `np.ndarray` [N, H, W, C] (`output_type="np"`: float in [0, 1], or uint8) or
            `torch.Tensor` [N, C, H, W] in [0, 1] (`output_type="pt"`).
        border (`int`, defaults to 0): white pixels between and around the images; with 0 empty cells are black.
        min_size (`int`, defaults to 0): upscale small grids by the integer factor `max(1, min_size // longer side)`
            (nearest neighbour), so a grid of 8×8 images is still visible.
        columns (`int`, *optional*): images per row (e.g. a class-conditional grid: one row per class).

    Returns:
        `np.ndarray`: uint8 [rows·H, cols·W] for one channel, [rows·H, cols·W, C] otherwise.
    """
    if hasattr(images, "permute"):  # a torch tensor [N, C, H, W]
        images = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch [N, H, W, C] or [N, C, H, W], got shape {images.shape}")
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ValueError(f"border must be an integer >= 0, got {border!r}")
    if columns is not None and (isinstance(columns, bool) or not isinstance(columns, int) or columns < 1):
        raise ValueError(f"columns must be an integer >= 1 or None, got {columns!r}")
    if images.dtype != np.uint8:
        images = (np.clip(images.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n)) if columns is None else columns
    rows = math.ceil(n / cols)
    fill = 255 if border else 0
    grid = np.full((rows * (h + border) + border, cols * (w + border) + border, c), fill, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = border + r * (h + border), border + q * (w + border)
        grid[top : top + h, left : left + w] = images[i]
    scale = max(1, min_size // max(grid.shape[:2]))
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid[..., 0] if c == 1 else grid


def save_image_grid(images, path: str, border: int = 1, min_size: int = 256, columns: Optional[int] = None) -> str:
    """Write `image_grid(images, border, min_size, columns)` as a PNG (creating its folder); returns `path`."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image_grid(images, border=border, min_size=min_size, columns=columns)).save(path)
    return path


# ---------------------------------------------------------------------- metrics and curves
def parse_metrics_line(line: str) -> Optional[Dict[str, Any]]:
    """A metrics.jsonl row, or None for a blank or half-written line (a run killed mid-write)."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except ValueError:
        logger.warning("metrics.jsonl: skipped an incomplete line %r", line[:80])
        return None
    return row if isinstance(row, dict) else None


def read_metrics(path: str) -> Tuple[Dict[int, float], Dict[int, float]]:
    """(loss per step, bits/dim per step) from a `metrics.jsonl` (the last entry of a step wins)."""
    losses: Dict[int, float] = {}
    bpd: Dict[int, float] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = parse_metrics_line(line)
                if row is None:
                    continue
                if "loss" in row:
                    losses[int(row["step"])] = float(row["loss"])
                if "bits_per_dim" in row:
                    bpd[int(row["step"])] = float(row["bits_per_dim"])
    return losses, bpd


def plot_training_curves(metrics_path: str, out_path: str) -> str:
    """Plot the training loss (with a moving average) and the held-out bits/dim against the step into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, bpd = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, 2 if bpd else 1, figsize=(10 if bpd else 5.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    if losses:
        steps = np.array(sorted(losses))
        values = np.array([losses[s] for s in steps])
        ax.plot(steps, values, lw=0.6, alpha=0.4, label="loss")
        window = max(1, len(values) // 20)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"moving average ({window})")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if bpd:
        ax = axes[0, 1]
        steps = sorted(bpd)
        ax.plot(steps, [bpd[s] for s in steps], marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel("held-out bits/dim (EMA)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


# ---------------------------------------------------------------------- the model card
def model_card(
    repo_id: str,
    unet,
    scheduler_config: Mapping[str, Any],
    *,
    num_inference_steps: int = 50,
    trained: Optional[str] = None,
    sample_grid: bool = False,
    metrics: Optional[Mapping[str, Any]] = None,
    training_config: Optional[Mapping[str, Any]] = None,
    tags: Tuple[str, ...] = (),
    id2label: Optional[Mapping[str, str]] = None,
    class_dropout_prob: Optional[float] = None,
    **metadata,
):
    """
    The model card (README.md) of a ddpm-ext pipeline, for every path that writes one (a training run, `push_to_hub`,
    `save_pretrained(push_to_hub=True)`): Hub metadata, what the model is, its scheduler settings and how to load it
    with and without ddpm-ext; for a training run also the sample grid, the final metrics and the configuration.

    Args:
        repo_id (`str`): the repo the card names in its code ("namespace/name", or a local name).
        unet (`UNet2DModel`): the model (its config and parameter count).
        scheduler_config (`Mapping`): the scheduler's config (`pipe.scheduler.config`).
        num_inference_steps (`int`, defaults to 50): the steps in the usage example.
        trained (`str`, *optional*): a sentence on how it was trained (a training run gives one).
        sample_grid (`bool`, defaults to `False`): show `sample_grid.png` (published beside the card).
        metrics (`Mapping`, *optional*): the final metrics; a table and the `ddpm_ext_metrics` metadata.
        training_config (`Mapping`, *optional*): the training options; a JSON block and the
            `ddpm_ext_training_config` metadata.
        tags (`tuple[str]`): tags added to ddpm-ext's own.
        id2label (`Mapping`, *optional*): a class-conditional model's classes ({id: name}, ids int or str); the
            card lists them, says the sample grid has one row per class and shows sampling by label name.
        class_dropout_prob (`float`, *optional*): the label dropout the conditional model was trained with.
        **metadata: further `huggingface_hub.ModelCardData` fields (`license`, `datasets`, ...).

    Returns:
        `huggingface_hub.ModelCard`.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if metrics is not None:
        metadata["ddpm_ext_metrics"] = dict(metrics)
    if training_config is not None:
        metadata["ddpm_ext_training_config"] = json.loads(
            json.dumps(training_config, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
        )
    own_tags = CARD_TAGS if not id2label else CONDITIONAL_CARD_TAGS
    if id2label:  # keys as str, as model_index.json stores them (a pipeline's `id2label` has int keys)
        id2label = {str(k): str(v) for k, v in id2label.items()}
        metadata["ddpm_ext_id2label"] = {str(k): str(v) for k, v in id2label.items()}
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",  # the Hub has no class-conditional task
        tags=list(own_tags) + [t for t in tags if t not in own_tags],
        **metadata,
    )
    size = unet.config.sample_size
    hw = f"{size}×{size}" if isinstance(size, int) else "×".join(str(s) for s in size)
    params = sum(p.numel() for p in unet.parameters())
    kind = "An unconditional" if not id2label else f"A class-conditional ({len(id2label)} classes)"
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"{kind} DDPM image model ({params / 1e6:.2f}M parameters, {unet.config.in_channels}-channel {hw}"
        " images), saved by [ddpm-ext](https://pypi.org/project/ddpm-ext/) as a self-contained diffusers pipeline.",
    ]
    if trained:
        lines += ["", trained.strip()]
    if sample_grid:
        lines += ["", f"![samples]({SAMPLE_GRID})"]
        if id2label:
            lines += ["", "The sample grid has one row per class (row k: class id k), at the default guidance."]
    if id2label:
        dropout = (
            "" if class_dropout_prob is None else f" with probability {class_dropout_prob} (`class_dropout_prob`)"
        )
        lines += [
            "",
            "## Classes",
            "",
            "Trained with classifier-free guidance (Ho & Salimans 2022): each training label was replaced by a"
            f" learned null class{dropout}; `guidance_scale` s mixes ε = ε_null + s·(ε_class − ε_null)"
            " (s = 1: plain conditional, s = 0: unconditional).",
            "",
            "| id | name |",
            "| --- | --- |",
        ]
        lines += [f"| {k} | {v} |" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))]
    lines += ["", "| scheduler setting | value |", "| --- | --- |"]
    lines += [f"| {key} | {scheduler_config.get(key)} |" for key in SCHEDULER_CARD_KEYS if key in scheduler_config]
    lines += [
        "",
        "## Usage",
        "",
        "With ddpm-ext installed (runs no code from this repository):",
        "",
        "```python",
        "from ddpm_ext import DDPMExtPipeline",
        "",
        f'pipe = DDPMExtPipeline.from_pretrained("{repo_id}")',
    ]
    if id2label:
        from .pipelines.pipeline_ddpm_ext import DEFAULT_GUIDANCE_SCALE  # torch: only for a conditional model's card

        name = id2label.get("7", id2label[sorted(id2label, key=int)[-1]])
        lines += [
            f"images = pipe(batch_size=16, class_labels={json.dumps(name)}, guidance_scale={DEFAULT_GUIDANCE_SCALE},"
            f" num_inference_steps={num_inference_steps}).images",
            f"labels = torch.full((16,), pipe.labels[{json.dumps(name)}])",
            "bits_per_dim = pipe.bits_per_dim(images, class_labels=labels)  # the conditional likelihood bound",
            "```",
        ]
        lines.insert(lines.index("from ddpm_ext import DDPMExtPipeline"), "import torch")
    else:
        lines += [
            f"images = pipe(batch_size=16, num_inference_steps={num_inference_steps}).images",
            "bits_per_dim = pipe.bits_per_dim(images)  # each image's negative log-likelihood bound",
            "```",
        ]
    lines += [
        "",
        "With plain diffusers (runs this repository's `pipeline_ddpm_ext.py` and `scheduler/scheduling_ddpm_ext.py`):",
        "",
        "```python",
        "from diffusers import DiffusionPipeline",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo_id}", trust_remote_code=True)',
        "```",
    ]
    if metrics:
        lines += ["", "## Final metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()]
    if training_config is not None:
        lines += ["", "## Training configuration", "", "```json", json.dumps(training_config, indent=2, default=str)]
        lines += ["```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def write_model_card(config, result, dataset_label: str, unet, id2label: Optional[Mapping[str, str]] = None) -> str:
    """Write a training run's `output_dir/README.md` (see `model_card`; `id2label`: a class-conditional run's
    classes); returns its path."""
    metrics = {"global_step": result.global_step}
    if result.final_loss is not None:
        metrics["final_train_loss"] = round(result.final_loss, 6)
    if result.final_bits_per_dim is not None:
        metrics["held_out_bits_per_dim"] = round(result.final_bits_per_dim, 4)
    saved = os.path.join(config.output_dir, "scheduler", "scheduler_config.json")
    if os.path.isfile(saved):  # what the run published
        with open(saved, encoding="utf-8") as fh:
            scheduler_config = json.load(fh)
    else:
        scheduler_config = {"num_train_timesteps": config.ddpm_num_steps, "beta_schedule": config.ddpm_beta_schedule,
                            "prediction_type": config.prediction_type, "variance_type": config.variance_type}
    trained = (
        f"Trained with ddpm-ext on {dataset_label}: `{config.model_preset}` UNet, loss `{config.loss_type}`,"
        f" {'EMA' if config.use_ema else 'final'} weights."
        + (f" Class-conditional on the column `{config.label_column or 'label'}`." if id2label else "")
    )
    options = config.to_dict()
    card = model_card(
        config.hub_model_id or os.path.basename(os.path.abspath(config.output_dir)),
        unet,
        scheduler_config,
        num_inference_steps=config.ddpm_num_inference_steps,
        trained=trained,
        sample_grid=True,
        metrics=metrics,
        training_config={k: v for k, v in options.items() if k not in ("hub_token", "output_dir", "logging_dir")},
        tags=("pytorch",) + (("improved-ddpm",) if config.variance_type in ("learned", "learned_range") else ()),
        license="apache-2.0",
        datasets=[config.dataset_name] if config.dataset_name else None,
        id2label=id2label,
        class_dropout_prob=config.class_dropout_prob if id2label else None,
    )
    path = os.path.join(config.output_dir, "README.md")
    card.save(path)
    return path


__all__ = [
    "SAMPLE_GRID",
    "image_grid",
    "model_card",
    "plot_training_curves",
    "read_metrics",
    "save_image_grid",
    "write_model_card",
]
