# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""The `ddpm-ext` command: demo, train, sample, evaluate, publish.

Errors print as one line (`ddpm-ext: error: ...`) with exit status 2; `--debug` shows the traceback instead.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional

EPILOG = {
    "demo": "example:\n  ddpm-ext demo --output-dir ddpm-ext-demo",
    "train": (
        "examples:\n"
        "  ddpm-ext train --resolution 16 --use_ema --output_dir ddpm-digits\n"
        "  ddpm-ext train --launcher-args '--multi_gpu --num_processes 2' --mixed_precision bf16 ...\n"
        "  ddpm-ext train --help-training        # every training flag"
    ),
    "sample": (
        "examples:\n"
        "  ddpm-ext sample --model ddpm-ext-demo --num 16 --steps 50 --eta 0 --out grid.png\n"
        "  ddpm-ext sample --model ddpm-ext-demo --class 7 --guidance-scale 3 --out sevens.png   # class-conditional"
    ),
    "evaluate": (
        "examples:\n  ddpm-ext evaluate --model ddpm-ext-demo --num-samples 256 --steps 10,25,50,100,1000 --nll\n"
        "  ddpm-ext evaluate --model ddpm-ext-demo --steps 50 --guidance-scales 0,1,2,3,5   # class-conditional"
    ),
    "publish": "example:\n  ddpm-ext publish ddpm-digits --repo-id your-name/ddpm-digits --private",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm-ext",
        description="DDPM / Improved-DDPM for diffusers: train, sample, evaluate and publish models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `ddpm-ext <command> --help` for each command's options and an example",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,train,sample,evaluate,publish}")
    kw = dict(formatter_class=argparse.RawDescriptionHelpFormatter)

    demo = sub.add_parser(
        "demo", help="train a small class-conditional model on the embedded digits, sample, evaluate, save",
        epilog=EPILOG["demo"], **kw,
    )
    demo.add_argument("--output-dir", default="ddpm-ext-demo", help="where the run goes (default: %(default)s)")
    demo.add_argument("--max-train-steps", type=int, default=500, help="training steps (default: %(default)s)")
    demo.add_argument("--train-timesteps", type=int, default=1000, help="diffusion steps T (default: %(default)s)")
    demo.add_argument("--nll-images", type=int, default=16, help="digits left out of training for bits/dim (default: %(default)s)")
    demo.add_argument("--resolution", type=int, default=8, help="image size; 8 is the digits' own (default: %(default)s)")
    demo.add_argument("--num-samples", type=int, default=256, help="images for the Fréchet distance (default: %(default)s)")
    demo.add_argument("--steps", type=int, default=25, help="sampling steps (default: %(default)s)")
    demo.add_argument("--guidance-scale", type=float, default=1.5, help="classifier-free guidance of the samples (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)

    train = sub.add_parser(
        "train", help="train with accelerate (all flags of examples/train_ddpm.py)", epilog=EPILOG["train"], **kw
    )
    train.add_argument("--launcher-args", default="", help="arguments for `accelerate launch`, quoted as one string")
    train.add_argument("--no-launch", action="store_true", help="run in this process instead of `accelerate launch`")
    train.add_argument("--help-training", action="store_true", help="list every training flag and exit")

    sample = sub.add_parser("sample", help="sample a grid of images from a saved model", epilog=EPILOG["sample"], **kw)
    sample.add_argument("--model", required=True, help="a saved pipeline folder or a Hub repo id")
    sample.add_argument("--num", type=int, default=16, help="number of images (default: %(default)s)")
    sample.add_argument("--steps", type=int, default=50, help="sampling steps (default: %(default)s)")
    sample.add_argument("--eta", type=float, default=None, help="DDIM η (0 deterministic, 1 ancestral); default: ancestral DDPM")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default="grid.png", help="output PNG (default: %(default)s)")
    sample.add_argument(
        "--class", dest="classes", default=None,
        help="class-conditional models: class names or ids, comma-separated (7 or 3,7), or 'all' for one row per class"
        " (the default for a class-conditional model); with several classes --num is images per class",
    )
    sample.add_argument(
        "--guidance-scale", type=float, default=None,
        help="classifier-free guidance s: 0 unconditional, 1 plain conditional, > 1 stronger (default: the pipeline's, 1.5)",
    )
    sample.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")

    evaluate = sub.add_parser("evaluate", help="Fréchet distance per step count, bits/dim", epilog=EPILOG["evaluate"], **kw)
    evaluate.add_argument("--model", required=True, help="a saved pipeline folder or a Hub repo id")
    evaluate.add_argument("--num-samples", type=int, default=256)
    evaluate.add_argument("--steps", default="10,25,50,100,1000", help="comma-separated step counts (default: %(default)s)")
    evaluate.add_argument("--nll", action="store_true", help="also compute bits/dim on held-out images")
    evaluate.add_argument("--nll-images", type=int, default=180, help="held-out images for bits/dim (default: %(default)s)")
    evaluate.add_argument("--features", default="digits", help="digits | inception | dinov2:<name or path> (default: %(default)s)")
    evaluate.add_argument("--real", default=None, help="reference images: a datasets name or image folder (default: the embedded digits)")
    evaluate.add_argument("--eta", type=float, default=None)
    evaluate.add_argument(
        "--guidance-scales", default=None,
        help="class-conditional digits models: comma-separated guidance scales for the class-accuracy / Fréchet distance"
        " table (default for such a model: 0,1,2,3,5)",
    )
    evaluate.add_argument("--guidance-steps", type=int, default=50, help="sampling steps of the guidance table (default: %(default)s)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", default=None, help="output folder for results.json and the plot (default: <model>/evaluation)")
    evaluate.add_argument("--device", default=None)

    publish = sub.add_parser("publish", help="upload a finished training run to the Hub", epilog=EPILOG["publish"], **kw)
    publish.add_argument("output_dir", help="the training run's output_dir")
    publish.add_argument("--repo-id", required=True, help="namespace/name on the Hub")
    publish.add_argument("--private", action="store_true")
    publish.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    publish.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        _check_paths(args)
        return {
            "demo": _demo,
            "train": _train,
            "sample": _sample,
            "evaluate": _evaluate,
            "publish": _publish,
        }[args.command](args, extra)
    except KeyboardInterrupt:
        print("ddpm-ext: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line; the traceback with --debug
        if args.debug:
            raise
        print(f"ddpm-ext: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


def _device(name: Optional[str]):
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _is_repo_id(text: str) -> bool:
    """`namespace/name` as the Hub spells repo ids (no leading `.`, `~` or `/`, exactly one `/`)."""
    import re

    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None and not text.endswith((".", "/"))


def _check_local_or_repo(flag: str, value: str) -> None:
    """A value that is not an existing path goes to the Hub only when it looks like `namespace/name`; anything else
    (`does-not-exist`, `./nope`, `/tmp/x/y/z`) is a mistyped local path: say so, without a network round trip."""
    if os.path.exists(value) or _is_repo_id(value):
        return
    raise ValueError(
        f"{flag} {value!r}: no such folder (a local path) and not a Hub repo id of the form namespace/name"
    )


def _check_paths(args) -> None:
    if getattr(args, "model", None) is not None:
        _check_local_or_repo("--model", args.model)
    if getattr(args, "real", None) is not None:
        _check_local_or_repo("--real", args.real)


def _check_image_path(flag: str, path: str) -> None:
    """An output image path: not a folder, with an extension PIL can write (checked before any sampling)."""
    from PIL import Image

    Image.init()
    writable = sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE)
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        example = os.path.join(path, "grid.png")
        raise ValueError(f"{flag} {path!r} is a folder; give an image file name such as {example}")
    if os.path.splitext(path)[1].lower() not in writable:
        raise ValueError(
            f"{flag} {path!r} has no image extension; allowed: {', '.join(e for e in writable if e in _COMMON_EXT)}"
            " (or another PIL can write)"
        )


_COMMON_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _from_pretrained(model: str):
    """DDPMExtPipeline.from_pretrained without diffusers' component-loading progress bar (the command's output is
    its own lines; an error stays one line)."""
    from diffusers.utils import logging as diffusers_logging

    from .pipelines import DDPMExtPipeline

    enabled = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        return DDPMExtPipeline.from_pretrained(model)
    finally:
        if enabled:
            diffusers_logging.enable_progress_bar()


def _load(model: str, device):
    pipe = _from_pretrained(model).to(device)
    pipe.unet.eval()
    return pipe


def _sample(args, extra) -> int:
    from .evaluation import sample_images
    from .reporting import save_image_grid

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    _check_image_path("--out", args.out)
    pipe = _load(args.model, _device(args.device))
    classes = _class_ids(pipe, args.classes, args.guidance_scale)
    if classes is None:
        pipe.set_progress_bar_config(desc=f"sampling {args.num} images, {args.steps} steps")
        images = sample_images(pipe, args.num, args.steps, batch_size=min(args.num, 64), seed=args.seed, eta=args.eta)
        print(f"wrote {save_image_grid(images, args.out)} ({args.num} images, {args.steps} steps)")
        return 0
    import torch

    labels = torch.tensor(classes).repeat_interleave(args.num)  # row k: --num images of the k-th class
    pipe.set_progress_bar_config(desc=f"sampling {len(labels)} images, {args.steps} steps")
    images = sample_images(pipe, len(labels), args.steps, batch_size=min(len(labels), 64), seed=args.seed,
                           eta=args.eta, class_labels=labels, guidance_scale=args.guidance_scale)
    scale = pipe.guidance_scale
    path = save_image_grid(images, args.out, columns=args.num if len(classes) > 1 else None)
    names = ", ".join(pipe.id2label[c] for c in classes)
    rows = f", one row per class ({names})" if len(classes) > 1 else f" of class {names}"
    print(f"wrote {path} ({len(labels)} images{rows}, {args.steps} steps, guidance scale {scale:g})")
    return 0


def _class_ids(pipe, classes: Optional[str], guidance_scale: Optional[float]) -> Optional[List[int]]:
    """The class ids `--class` names (names first, then ids; 'all' or unset: every class of a class-conditional
    model), or None for an unconditional model."""
    if not pipe.num_classes:
        if classes is not None or guidance_scale is not None:
            flag = "--class" if classes is not None else "--guidance-scale"
            raise ValueError(f"{flag} needs a class-conditional model; this one is unconditional (no classes)")
        return None
    if classes is None or classes.strip() == "all":
        return list(range(pipe.num_classes))
    ids = []
    for item in (c.strip() for c in classes.split(",")):
        if item in pipe.labels:
            ids.append(pipe.labels[item])
        elif item.lstrip("-").isdigit() and 0 <= int(item) < pipe.num_classes:
            ids.append(int(item))
        else:
            raise ValueError(
                f"--class {item!r} is not a class of this model; allowed: 'all', a name of {list(pipe.labels)} or an"
                f" id 0..{pipe.num_classes - 1}"
            )
    return ids


def _parse_steps(text: str) -> List[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--steps must be comma-separated integers, got {text!r}") from None
    if not steps:
        raise ValueError(f"--steps must name at least one step count, got {text!r}")
    return steps


def _parse_scales(text: str) -> List[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--guidance-scales must be comma-separated numbers, got {text!r}") from None
    if not scales or any(not 0 <= s < float("inf") for s in scales):
        raise ValueError(f"--guidance-scales must be finite numbers >= 0, got {text!r}")
    return scales


def _evaluate(args, extra) -> int:
    import torch

    from .evaluation import evaluate_pipeline, plot_evaluation, reference_digits

    steps = _parse_steps(args.steps)
    scales = _parse_scales(args.guidance_scales) if args.guidance_scales is not None else None
    if args.guidance_steps < 1:
        raise ValueError(f"--guidance-steps must be >= 1, got {args.guidance_steps}")
    if os.environ.get("DDPM_EXT_MAX_TRAIN_STEPS"):  # test hook (tests/test_readme.py): a smoke run, not an option
        args.num_samples, args.nll_images = min(args.num_samples, 4), min(args.nll_images, 2)
    pipe = _load(args.model, _device(args.device))
    pipe.set_progress_bar_config(disable=True)
    if scales is not None and not pipe.num_classes:
        raise ValueError("--guidance-scales needs a class-conditional model; this one is unconditional (no classes)")
    if scales is None and pipe.num_classes:
        scales = [0.0, 1.0, 2.0, 3.0, 5.0]
    size = pipe.unet.config.sample_size
    channels = pipe.unet.config.in_channels
    if args.real is None:
        real = reference_digits(size, channels, split="all")
        held_out = reference_digits(size, channels, split="test")
    else:
        from .data import load_image_dataset, pretensorize, split_dataset

        dataset = load_image_dataset(args.real) if not os.path.isdir(args.real) else load_image_dataset(train_data_dir=args.real)
        real = pretensorize(dataset, size, channels)
        held_out = pretensorize(split_dataset(dataset)[1], size, channels)
    nll_images = held_out[: args.nll_images] if args.nll else None
    print(f"evaluating {args.model}: {args.num_samples} samples per step count, {args.features} features", flush=True)
    results = evaluate_pipeline(
        pipe, real, steps, args.num_samples, features=args.features, batch_size=args.batch_size, seed=args.seed,
        eta=args.eta, nll_images=nll_images, progress=True,
    )
    results["model"] = args.model
    out_dir = args.out or (os.path.join(args.model, "evaluation") if os.path.isdir(args.model) else "evaluation")
    os.makedirs(out_dir, exist_ok=True)
    if scales:
        from .evaluation import evaluate_guidance, plot_guidance

        print(f"guidance: {args.num_samples} class-balanced samples per scale, {args.guidance_steps} steps", flush=True)
        guided = evaluate_guidance(pipe, real, scales, args.num_samples, steps=args.guidance_steps,
                                   features=args.features, batch_size=args.batch_size, seed=args.seed, eta=args.eta,
                                   progress=True)
        results["guidance"] = guided
        print(f"| guidance scale | class accuracy | Fréchet distance |   (the classifier on real held-out digits:"
              f" {100 * guided['real_accuracy']:.1f} %)")
        print("| ---: | ---: | ---: |")
        for row in guided["guidance"]:
            print(f"| {row['guidance_scale']:g} | {100 * row['class_accuracy']:.1f} % | {row['frechet_distance']:.3f} |")
        plot = plot_guidance(guided, os.path.join(out_dir, "guidance.png"), title=os.path.basename(args.model.rstrip("/")))
        print(f"wrote {plot}")
    print("| steps | Fréchet distance | sampling s | s / image |")
    print("| ---: | ---: | ---: | ---: |")
    for row in results["steps"]:
        print(f"| {row['steps']} | {row['frechet_distance']:.3f} | {row['seconds']:.1f} | {row['seconds_per_image']:.4f} |")
    if results["bits_per_dim"]:
        b = results["bits_per_dim"]
        print(f"bits/dim on {b['num_images']} held-out images: {b['mean']:.4f} ± {b['stderr']:.4f}")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot = plot_evaluation(results, os.path.join(out_dir, "fd_vs_steps.png"), title=os.path.basename(args.model.rstrip("/")))
    print(f"wrote {os.path.join(out_dir, 'results.json')} and {plot}")
    del torch
    return 0


def _train(args, extra) -> int:
    from .training.config import TrainingConfig, build_arg_parser

    if args.help_training:
        parser = build_arg_parser()
        parser.prog = "ddpm-ext train"
        parser.print_help()
        return 0
    if args.no_launch:
        from .training.__main__ import main as train_main

        return train_main(extra)
    # the flags are checked here, before any process starts, as `--no-launch` checks them (argparse errors exit 2);
    # the owners of the vocabularies (torch modules) are consulted in the training process itself
    parser = build_arg_parser()
    try:
        TrainingConfig.from_args(parser.parse_args(extra)).validate(check_owners=False)
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    from .training.launch import check_launcher_args

    launcher_args = shlex.split(args.launcher_args)
    check_launcher_args(launcher_args)
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher_args, "-m", "ddpm_ext.training", *extra]
    print("running:", " ".join(shlex.quote(c) for c in command), flush=True)
    return _run_launcher(command)


def _run_launcher(command: List[str]) -> int:
    """Run `accelerate launch` in its own process group and forward SIGTERM / SIGINT to it; wait for every training
    process (this process becomes their subreaper on Linux, so a worker orphaned by its launcher is still waited for);
    return the training's own exit status (see `python -m ddpm_ext.training`), not the launcher's."""
    import signal
    import tempfile

    from .training.checkpoints import LAUNCHER_PID_ENV, STATUS_FILE_ENV, become_subreaper

    fd, status_path = tempfile.mkstemp(prefix="ddpm-ext-status-")
    os.close(fd)
    env = dict(os.environ, **{STATUS_FILE_ENV: status_path, LAUNCHER_PID_ENV: str(os.getpid())})
    subreaper = become_subreaper()
    child = subprocess.Popen(command, env=env, start_new_session=True)
    received: List[int] = []

    def forward(signum, frame):
        received.append(signum)
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
        if subreaper:  # training processes whose launcher is gone were handed to this process: wait for them
            from .training.checkpoints import wait_for_processes_with_env

            wait_for_processes_with_env(STATUS_FILE_ENV, status_path)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    try:
        with open(status_path, encoding="utf-8") as fh:
            text = fh.read().strip()
    finally:
        os.remove(status_path)
    if text.isdigit():
        return int(text)
    if code < 0:
        return 128 - code
    if received and code != 0:
        return 128 + received[0]
    return code


def _publish(args, extra) -> int:
    from .hub import push_output_dir

    url = push_output_dir(args.output_dir, args.repo_id, token=args.token, private=args.private, revision=args.revision)
    print(f"published {args.output_dir} to {args.repo_id}: {url}")
    return 0


def _demo(args, extra) -> int:
    import torch

    from .evaluation import (
        classify_digits,
        digit_of_each_class,
        frechet_distance,
        reference_digits,
        sample_images,
    )
    from .reporting import save_image_grid
    from .training import TrainingConfig, train

    started = time.perf_counter()
    out = args.output_dir
    if args.num_samples < 10:
        raise ValueError(f"--num-samples must be >= 10 (at least one image per digit), got {args.num_samples}")
    batch_size, num_digits = 64, 1797
    if not 1 <= args.nll_images < num_digits - batch_size:  # the held-out digits leave at least one training batch
        raise ValueError(f"--nll-images must be an integer in [1, {num_digits - batch_size - 1}], got {args.nll_images}")
    if not 0 <= args.guidance_scale < float("inf"):
        raise ValueError(f"--guidance-scale must be a finite number >= 0, got {args.guidance_scale}")
    cap = os.environ.get("DDPM_EXT_MAX_TRAIN_STEPS")
    if cap:  # test hook (tests/test_readme.py): a smoke run of every stage, not a product option
        args.max_train_steps = min(args.max_train_steps, int(cap))
        args.num_samples = min(args.num_samples, 16)
        args.nll_images = min(args.nll_images, 2)
    config = TrainingConfig(
        output_dir=out,
        resolution=args.resolution,
        model_preset="tiny",
        max_train_steps=args.max_train_steps,
        train_batch_size=batch_size,
        learning_rate=2e-3,
        lr_warmup_steps=min(100, args.max_train_steps // 10),
        use_ema=True,
        ema_max_decay=0.999,
        ddpm_num_steps=args.train_timesteps,
        ddpm_beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        loss_type="hybrid",
        ddpm_num_inference_steps=min(args.steps, args.train_timesteps),
        # bits/dim on digits the model never trains on: the trainer holds them out and evaluates them once, at the end
        eval_nll_steps=max(1, args.max_train_steps),
        eval_nll_num_images=args.nll_images,
        eval_nll_timestep_batch_size=10,
        checkpointing_steps=500,
        checkpoints_total_limit=1,
        overwrite_output_dir=True,  # the demo starts over each time
        save_images_epochs=10**6,
        save_model_epochs=10**6,
        logger="tensorboard",
        seed=args.seed,
        class_conditional=True,  # the digits' labels: "draw me a 7"
    )
    print(f"[1/3] training the tiny class-conditional UNet on the embedded digits ({args.resolution}×{args.resolution}, "
          f"{args.max_train_steps} steps, IDDPM recipe: cosine schedule, learned variance, hybrid loss; labels dropped"
          f" 10 % of the time for classifier-free guidance; {args.nll_images} digits held out for bits/dim)", flush=True)
    result = train(config)
    if result.interrupted_by is not None:
        print(f"training stopped by signal {result.interrupted_by}; checkpoint in {result.checkpoint}", file=sys.stderr)
        return 128 + int(result.interrupted_by)
    trained = time.perf_counter()
    pipe = _from_pretrained(out)
    steps = min(args.steps, args.train_timesteps)
    labels = torch.arange(args.num_samples) % pipe.num_classes  # image i is digit i mod 10
    print(f"[2/3] sampling {args.num_samples} images, every digit alike, with {steps} steps and guidance scale"
          f" {args.guidance_scale:g}", flush=True)
    images = sample_images(pipe, args.num_samples, steps, seed=args.seed, progress=True, class_labels=labels,
                           guidance_scale=args.guidance_scale)
    sampled = time.perf_counter()
    per_row = max(1, min(8, args.num_samples // pipe.num_classes))
    rows = torch.cat([images[labels == k][:per_row] for k in range(pipe.num_classes)])
    # row k: digit k; 8×8 digits are blown up (nearest) to ~40 px each so the grid is readable
    grid = save_image_grid(rows, os.path.join(out, "demo_samples.png"), columns=per_row, min_size=480)
    print("[3/3] Fréchet distance (digits-classifier features) against the 1,797 real digits; class accuracy", flush=True)
    fd = frechet_distance(reference_digits(args.resolution), images, float_range="[0,1]")
    accuracy = float((classify_digits(images) == digit_of_each_class(pipe)[labels]).float().mean())
    # the yardstick: real training digits against the real held-out ones
    fd_real = frechet_distance(reference_digits(args.resolution, split="train"), reference_digits(args.resolution, split="test"))
    total = time.perf_counter() - started
    summary = {
        "train_steps": result.global_step,
        "train_seconds": trained - started,
        "sampling_seconds": sampled - trained,
        "evaluation_seconds": time.perf_counter() - sampled,
        "total_seconds": total,
        "frechet_distance": fd,
        "class_accuracy": accuracy,
        "guidance_scale": args.guidance_scale,
        "frechet_distance_real_train_vs_test": fd_real,
        "bits_per_dim": result.final_bits_per_dim,
        "bits_per_dim_held_out_images": args.nll_images,
        "sampling_steps": steps,
    }
    with open(os.path.join(out, "demo_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    rows = [
        (os.path.abspath(out) + os.sep, "the saved pipeline (model_index.json, unet/, scheduler/, *.py)"),
        (os.path.abspath(grid), "samples, one row per digit (row k: digit k)"),
        (os.path.abspath(os.path.join(out, "README.md")), "the model card"),
        (os.path.abspath(os.path.join(out, "demo_results.json")), "these figures"),
    ]
    width = max(len(path) for path, _ in rows)
    files = "\n".join(f"  {path:<{width}}  {what}" for path, what in rows)
    print(
        f"""
done in {total / 60:.1f} min (training and held-out bits/dim {summary['train_seconds']:.0f} s, sampling {summary['sampling_seconds']:.0f} s, Fréchet distance and class accuracy {summary['evaluation_seconds']:.0f} s)
  Fréchet distance, {args.num_samples} samples at {steps} steps: {fd:.2f}   (real train vs real held-out: {fd_real:.2f})
  class accuracy (is a "7" classified as 7? independent digits classifier): {100 * accuracy:.1f} %
  bits/dim on {args.nll_images} held-out digits (left out of training): {summary['bits_per_dim']:.3f}

files:
{files}

load it:
  from ddpm_ext import DDPMExtPipeline
  pipe = DDPMExtPipeline.from_pretrained("{out}")
  # or, with plain diffusers:
  from diffusers import DiffusionPipeline
  pipe = DiffusionPipeline.from_pretrained("{out}", trust_remote_code=True)
  images = pipe(class_labels="7", batch_size=8, guidance_scale={args.guidance_scale:g}, num_inference_steps=25).images
  # or: ddpm-ext sample --model {out} --class 7 --guidance-scale {args.guidance_scale:g} --out sevens.png
"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
