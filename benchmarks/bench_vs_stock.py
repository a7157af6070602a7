"""Time-to-quality: ddpm-ext's recommended recipe against diffusers' stock `train_unconditional.py` recipe.

Both recipes train the same UNet (the `tiny` preset; learned variances double `out_channels`, nothing else
differs) on the same images with the same seed, batch size and optimizer, each in its own process pinned to one
thread, both processes running at the same time. The budget is the training process's own CPU time spent in
training steps (`time.process_time()`, setup and snapshot saving excluded): with one thread, a "CPU-minute" is one
minute of one core running that loop, so other load on the machine slows both alike in wall time but does not
change what a budget buys. At each budget the EMA weights are saved; `evaluate` then measures every snapshot.

Recipes:
  stock   stock diffusers classes only, a loop written like train_unconditional.py: `datasets` + `set_transform`
          (PIL resize, [-1, 1]) behind a shuffled accelerate-prepared DataLoader, `DDPMScheduler` (linear β,
          fixed_small), L_simple (MSE on ε), AdamW, cosine LR with warm-up, grad clip 1.0, `EMAModel`;
          sampled by `DDPMPipeline` (1000 steps).
  ext     ddpm-ext's recommended recipe through its own loop (`ddpm_ext.training.DDPMTrainer`): cosine β
          (squaredcos_cap_v2), hybrid loss (λ = 0.001), learned_range variance, same optimizer and EMA;
          sampled by `DDPMExtPipeline` with 50 respaced steps (also 25 and 1000).

    python benchmarks/bench_vs_stock.py make-data --out /tmp/vs                  # digits + shapes folders
    python benchmarks/bench_vs_stock.py train --out /tmp/vs --data digits --budgets 2 5 10 20   # both recipes
    python benchmarks/bench_vs_stock.py evaluate --out /tmp/vs --data digits
    python benchmarks/bench_vs_stock.py report --out /tmp/vs --plot benchmarks/vs_stock.png --results_dir benchmarks/vs_stock
    # both recipes under another optimizer setting, in runs/digits-lr2e-3 (evaluate with the same --run_name):
    python benchmarks/bench_vs_stock.py train --out /tmp/vs --data digits --learning_rate 2e-3 --lr_warmup_steps 100 --run_name lr2e-3
    python benchmarks/bench_vs_stock.py smoke --out /tmp/vs-smoke               # seconds: the whole chain, tiny
"""

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

RECIPES = ("stock", "ext")
EXT_RECIPE = dict(ddpm_beta_schedule="squaredcos_cap_v2", loss_type="hybrid", variance_type="learned_range")
# train_unconditional.py's defaults for the optimizer and EMA (shared by both recipes)
OPTIM = dict(learning_rate=1e-4, adam_beta1=0.95, adam_beta2=0.999, adam_weight_decay=1e-6, adam_epsilon=1e-8,
             lr_warmup_steps=500, ema_inv_gamma=1.0, ema_power=0.75, ema_max_decay=0.9999)
DATASETS = {"digits": dict(resolution=16, channels=1), "shapes": dict(resolution=32, channels=3)}
SHAPE_NAMES = ("circle", "square", "triangle")
PALETTE = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 30), (200, 60, 200), (30, 200, 210))


# ---------------------------------------------------------------------------------------------------- data
def draw_shapes(num: int, size: int = 32, seed: int = 0):
    """`num` RGB images (uint8 [N, size, size, 3]) of one filled shape on a grey background, and labels
    shape * 6 + colour. Drawn at 4× and downsampled (box filter), so edges are anti-aliased; deterministic."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    big = size * 4
    images, labels = [], []
    for _ in range(num):
        shape, colour = int(rng.integers(3)), int(rng.integers(len(PALETTE)))
        grey = int(rng.integers(40, 200))
        image = Image.new("RGB", (big, big), (grey, grey, grey))
        draw = ImageDraw.Draw(image)
        radius = rng.uniform(0.18, 0.38) * big
        cx, cy = rng.uniform(radius, big - radius, size=2)
        jitter = rng.integers(-25, 26, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(PALETTE[colour], jitter))
        if shape == 0:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
        elif shape == 1:
            angle = rng.uniform(0, math.pi / 2)
            pts = [(cx + radius * math.cos(angle + k * math.pi / 2), cy + radius * math.sin(angle + k * math.pi / 2))
                   for k in range(4)]
            draw.polygon(pts, fill=fill)
        else:
            angle = rng.uniform(0, 2 * math.pi / 3)
            pts = [(cx + radius * math.cos(angle + k * 2 * math.pi / 3),
                    cy + radius * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
            draw.polygon(pts, fill=fill)
        images.append(np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.uint8))
        labels.append(shape * len(PALETTE) + colour)
    return np.stack(images), np.array(labels)


def make_data(out: str, num_shapes: int = 2200, held_out: int = 200) -> None:
    """Write `<out>/data/{digits,shapes}/{train,test}/*.png` (+ `labels.json`): the digits' train/held-out split
    (`ddpm_ext.data.split_indices(1797, 0.1, seed=0)`, the 180 held-out digits bench_quality uses) at their 8×8, and
    the procedural shapes at 32×32 (last `held_out` images held out)."""
    from PIL import Image

    from ddpm_ext.data import load_digits_dataset, split_indices

    root = os.path.join(out, "data")
    digits = load_digits_dataset()
    train_idx, test_idx = split_indices(len(digits), 0.1, seed=0)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        folder = os.path.join(root, "digits", split)
        os.makedirs(folder, exist_ok=True)
        rows = digits.select(idx)
        for i, row in enumerate(rows):
            row["image"].save(os.path.join(folder, f"{i:05d}.png"))
        with open(os.path.join(folder, "labels.json"), "w") as fh:
            json.dump([int(v) for v in rows["label"]], fh)
    images, labels = draw_shapes(num_shapes, 32, seed=0)
    for split, sl in (("train", slice(0, num_shapes - held_out)), ("test", slice(num_shapes - held_out, None))):
        folder = os.path.join(root, "shapes", split)
        os.makedirs(folder, exist_ok=True)
        for i, image in enumerate(images[sl]):
            Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"))
        with open(os.path.join(folder, "labels.json"), "w") as fh:
            json.dump([int(v) for v in labels[sl]], fh)


def load_folder_uint8(folder: str, channels: int, resolution: int) -> torch.Tensor:
    """A folder of PNGs as uint8 [N, C, R, R], resized like training (PIL bilinear)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    out = []
    for name in names:
        with Image.open(os.path.join(folder, name)) as im:
            im = im.convert(mode)
            if im.size != (resolution, resolution):
                im = im.resize((resolution, resolution), Image.Resampling.BILINEAR)
            array = np.asarray(im, dtype=np.uint8)
        out.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


# ---------------------------------------------------------------------------------------------------- training
class StockRecipe:
    """train_unconditional.py's loop with stock diffusers classes (no ddpm-ext import). Differences from the
    script: torchvision is not importable here, so the transform is PIL resize (bilinear, as torchvision's
    `Resize` does on PIL images) + `x / 127.5 - 1` (= ToTensor + Normalize([0.5], [0.5])); images keep their own
    channel count (the script converts every image to RGB); the UNet is the shared config, not the script's
    default 6-level UNet; no tqdm, no file logging, no checkpoints."""

    def __init__(self, args, unet_kwargs: dict, horizon: int):
        import datasets
        from accelerate import Accelerator
        from diffusers import DDPMScheduler, UNet2DModel
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel
        from PIL import Image

        self.accelerator = accelerator = Accelerator(mixed_precision="no")
        torch.manual_seed(args.seed)
        model = UNet2DModel(**unet_kwargs)
        self.ema = EMAModel(model.parameters(), decay=OPTIM["ema_max_decay"], use_ema_warmup=True,
                            inv_gamma=OPTIM["ema_inv_gamma"], power=OPTIM["ema_power"], model_cls=UNet2DModel,
                            model_config=model.config)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                             prediction_type="epsilon")
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate,
                                      betas=(OPTIM["adam_beta1"], OPTIM["adam_beta2"]),
                                      weight_decay=OPTIM["adam_weight_decay"], eps=OPTIM["adam_epsilon"])
        dataset = datasets.load_dataset("imagefolder", data_dir=args.train_dir, split="train")
        resolution, mode = args.resolution, "L" if args.channels == 1 else "RGB"

        def transform_images(examples):
            processed = []
            for image in examples["image"]:
                image = image.convert(mode)
                if image.size != (resolution, resolution):  # square images: Resize(r) + crop(r) is this resize
                    image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
                array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
                array = array[None] if array.ndim == 2 else array.permute(2, 0, 1)
                processed.append(array / 127.5 - 1.0)
            return {"input": processed}

        dataset.set_transform(transform_images)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0,
                                             generator=torch.Generator().manual_seed(args.seed))
        lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
                                     num_training_steps=horizon)
        self.model, self.optimizer, self.loader, self.lr_scheduler = accelerator.prepare(
            model, optimizer, loader, lr_scheduler)
        self.ema.to(accelerator.device)
        self.iterator = iter(self.loader)
        self.global_step = 0
        self.last_loss = float("nan")

    def steps(self, n: int) -> None:
        import torch.nn.functional as F

        accelerator = self.accelerator
        for _ in range(n):
            try:
                batch = next(self.iterator)
            except StopIteration:  # next epoch
                self.iterator = iter(self.loader)
                batch = next(self.iterator)
            clean_images = batch["input"]
            noise = torch.randn(clean_images.shape, dtype=clean_images.dtype, device=clean_images.device)
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],),
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
                self.global_step += 1
            self.last_loss = loss.detach().item()
            accelerator.log({"loss": self.last_loss, "lr": self.lr_scheduler.get_last_lr()[0],
                             "step": self.global_step}, step=self.global_step)

    def save(self, folder: str) -> None:
        snapshot = copy.deepcopy(self.accelerator.unwrap_model(self.model))
        self.ema.copy_to(snapshot.parameters())
        snapshot.save_pretrained(folder)
        self.noise_scheduler.save_pretrained(folder)


class ExtRecipe:
    """ddpm-ext's recommended recipe through its own training loop (public API: `DDPMTrainer`)."""

    def __init__(self, args, horizon: int):
        from ddpm_ext.training import DDPMTrainer, TrainingConfig

        config = TrainingConfig(
            train_data_dir=args.train_dir, output_dir=os.path.join(args.run_dir, "trainer"),
            model_preset=args.preset, resolution=args.resolution, channels=args.channels, center_crop=True,
            train_batch_size=args.batch_size, max_train_steps=horizon, lr_scheduler="cosine", use_ema=True,
            logger="none", seed=args.seed, logging_steps=10, **EXT_RECIPE,
            **dict(OPTIM, learning_rate=args.learning_rate, lr_warmup_steps=args.lr_warmup_steps),
        )
        self.trainer = DDPMTrainer(config).setup()

    @property
    def global_step(self) -> int:
        return self.trainer.counter.global_step

    @property
    def last_loss(self) -> float:
        return float("nan") if self.trainer.last_loss is None else self.trainer.last_loss

    def steps(self, n: int) -> None:
        self.trainer.train_steps(n)

    def save(self, folder: str) -> None:
        with self.trainer.ema_weights():
            self.trainer.unet.save_pretrained(folder)
        self.trainer.noise_scheduler.save_pretrained(folder)


def train_one(args) -> None:
    """One recipe, one process, one thread: train until each CPU-time budget and snapshot the EMA weights."""
    torch.set_num_threads(1)
    from ddpm_ext.training import unet_config

    variance = EXT_RECIPE["variance_type"] if args.recipe == "ext" else "fixed_small"
    unet_kwargs = unet_config(args.preset, args.resolution, args.channels, variance)
    horizon = args.lr_horizon_steps
    loop = StockRecipe(args, unet_kwargs, horizon) if args.recipe == "stock" else ExtRecipe(args, horizon)
    budgets = sorted(args.budgets)
    cpu = 0.0
    wall_start = time.perf_counter()
    log_path = os.path.join(args.run_dir, "train_log.jsonl")
    with open(log_path, "w") as log:
        for budget in budgets:
            while cpu < budget * 60.0:
                if loop.global_step >= horizon:
                    raise SystemExit(f"reached lr_horizon_steps={horizon} before the {budget}-minute budget;"
                                     " raise --lr_horizon_steps")
                t0 = time.process_time()
                loop.steps(1)  # the budget is checked after every optimizer step
                cpu += time.process_time() - t0
                if loop.global_step % 200 == 0:
                    log.write(json.dumps({"step": loop.global_step, "cpu_s": round(cpu, 2),
                                          "wall_s": round(time.perf_counter() - wall_start, 1),
                                          "loss": loop.last_loss}) + "\n")
                    log.flush()
            folder = os.path.join(args.run_dir, f"budget_{budget:g}")
            loop.save(folder)
            info = {"recipe": args.recipe, "budget_min": budget, "cpu_s": cpu, "steps": loop.global_step,
                    "images": loop.global_step * args.batch_size,
                    "wall_s": time.perf_counter() - wall_start, "threads": torch.get_num_threads(),
                    "lr_horizon_steps": horizon, "batch_size": args.batch_size,
                    "learning_rate": args.learning_rate, "lr_warmup_steps": args.lr_warmup_steps}
            with open(os.path.join(folder, "snapshot.json"), "w") as fh:
                json.dump(info, fh, indent=1)
            print(json.dumps(info), flush=True)


def run_name(args) -> str:
    """The folder of a pair of runs under `<out>/runs/`: the data set's name, or `<data>-<name>` with `--run_name`."""
    return args.data if not args.run_name else f"{args.data}-{args.run_name}"


def launch(args) -> None:
    """Both recipes side by side, as two concurrent processes."""
    data = DATASETS[args.data]
    procs = []
    for recipe in args.recipes:
        run_dir = os.path.join(args.out, "runs", run_name(args), recipe)
        os.makedirs(run_dir, exist_ok=True)
        cmd = [sys.executable, os.path.abspath(__file__), "_train_one", "--recipe", recipe, "--run_dir", run_dir,
               "--train_dir", os.path.join(args.out, "data", args.data, "train"), "--preset", args.preset,
               "--resolution", str(data["resolution"]), "--channels", str(data["channels"]),
               "--batch_size", str(args.batch_size), "--seed", str(args.seed),
               "--lr_horizon_steps", str(args.lr_horizon_steps), "--learning_rate", str(args.learning_rate),
               "--lr_warmup_steps", str(args.lr_warmup_steps), "--budgets", *map(str, args.budgets)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_DATASETS_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false")
        log = open(os.path.join(run_dir, "stdout.log"), "w")
        procs.append((recipe, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    failed = []
    for recipe, proc, log in procs:
        if proc.wait() != 0:
            failed.append(recipe)
        log.close()
    if failed:
        tails = {r: open(os.path.join(args.out, "runs", run_name(args), r, "stdout.log")).read()[-3000:] for r in failed}
        raise SystemExit(f"training failed for {failed}: {tails}")


# ---------------------------------------------------------------------------------------------------- evaluation
class ShapesClassifierFeatures(torch.nn.Module):
    """Penultimate features (64-d) of a small CNN trained, in seconds, to tell the 18 shape × colour classes of
    the procedural shapes apart (train split only) — the RGB counterpart of ddpm-ext's digits-classifier features."""

    num_features = 64

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, epochs: int = 8, seed: int = 0):
        super().__init__()
        nn = torch.nn
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, 18)
        x = images.float() / 255.0
        optimizer = torch.optim.Adam(self.parameters(), lr=2e-3)
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for b in range(0, len(x), 64):
                idx = perm[b : b + 64]
                loss = torch.nn.functional.cross_entropy(self.head(self.body(x[idx])), labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.eval().requires_grad_(False)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            return float((self.head(self.body(images.float() / 255.0)).argmax(-1) == labels).float().mean())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        with torch.no_grad():
            return self.body(images.float())


def _labels(folder: str) -> torch.Tensor:
    with open(os.path.join(folder, "labels.json")) as fh:
        return torch.tensor(json.load(fh))


def features_for(args, data: str):
    """(feature spec or module, description)."""
    if data == "digits":
        return "digits", "ddpm_ext.evaluation.DigitsClassifierFeatures (64-d)"
    root = os.path.join(args.out, "data", "shapes")
    train = load_folder_uint8(os.path.join(root, "train"), 3, 32)
    test = load_folder_uint8(os.path.join(root, "test"), 3, 32)
    module = ShapesClassifierFeatures(train, _labels(os.path.join(root, "train")))
    acc = module.accuracy(test, _labels(os.path.join(root, "test")))
    return module, f"shapes-classifier CNN features (64-d; held-out accuracy {acc:.3f})"


def _sample(pipe, num: int, steps: int, batch_size: int, seed: int, seeds=None):
    """num images in [0, 1] [N, C, H, W] (image i drawn with seed + i), wall s, CPU s, network evaluations/image."""
    calls = {"images": 0}
    forward = pipe.unet.forward

    def counting_forward(sample, *a, **k):
        calls["images"] += sample.shape[0]
        return forward(sample, *a, **k)

    pipe.unet.forward = counting_forward
    out = []
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            gens = [torch.Generator().manual_seed(seeds[start + i] if seeds else seed + start + i) for i in range(n)]
            images = pipe(batch_size=n, generator=gens, num_inference_steps=steps, output_type="np").images
            out.append(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
    finally:
        pipe.unet.forward = forward
    return torch.cat(out), time.perf_counter() - w0, time.process_time() - c0, calls["images"] / num


def _sample_shard(pipe, args, steps: int):
    """Images shard, shard + n, shard + 2n, ... of the `num_samples` (image i still drawn with seed + i)."""
    seeds = [args.seed + i for i in range(args.shard, args.num_samples, args.num_shards)]
    return _sample(pipe, len(seeds), steps, args.batch_size, args.seed, seeds=seeds)


def _merge_shards(folder: str, steps: int, num_shards: int, num_samples: int):
    """The images of `num_shards` shard files back in seed order; wall and CPU time summed over the shards."""
    shards = [torch.load(os.path.join(folder, f"shard_{steps}_{k}of{num_shards}.pt")) for k in range(num_shards)]
    images = torch.empty(num_samples, *shards[0]["images"].shape[1:])
    for k, shard in enumerate(shards):
        images[k::num_shards] = shard["images"]
    return (images, sum(x["wall_s"] for x in shards), sum(x["cpu_s"] for x in shards),
            shards[0]["nfe"])


def _fd(metric, fake: torch.Tensor) -> float:
    metric.reset()
    for b in range(0, len(fake), 256):
        metric.update(fake[b : b + 256], real=False)
    return float(metric.compute())


def evaluate(args) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
    from ddpm_ext.evaluation import build_fid_metric, images_to_unit_float

    torch.set_num_threads(args.threads)
    data = DATASETS[args.data]
    root = os.path.join(args.out, "data", args.data)
    train = load_folder_uint8(os.path.join(root, "train"), data["channels"], data["resolution"])
    test = load_folder_uint8(os.path.join(root, "test"), data["channels"], data["resolution"])
    real = torch.cat([train, test])
    features, feature_desc = features_for(args, args.data)
    metric = build_fid_metric(features)
    real_unit = images_to_unit_float(real)
    for b in range(0, len(real_unit), 256):
        metric.update(real_unit[b : b + 256], real=True)
    # the floor: N real held-out/train images against the reference (what a perfect model would score at this N)
    floor_n = min(args.num_samples, len(real))
    floor = _fd(metric, images_to_unit_float(real[torch.randperm(len(real), generator=torch.Generator().manual_seed(1))[:floor_n]]))
    nll = test[: args.nll_images]
    runs = os.path.join(args.out, "runs", run_name(args))
    for recipe in args.recipes:
        folders = sorted((d for d in os.listdir(os.path.join(runs, recipe)) if d.startswith("budget_")),
                         key=lambda d: float(d.split("_")[1]))
        for d in folders:
            folder = os.path.join(runs, recipe, d)
            path = os.path.join(folder, "eval.json")
            result = json.load(open(path)) if os.path.isfile(path) else {}
            info = json.load(open(os.path.join(folder, "snapshot.json")))
            if float(info["budget_min"]) not in args.budgets_to_eval and args.budgets_to_eval:
                continue
            unet = UNet2DModel.from_pretrained(folder).eval()
            if recipe == "stock":
                sampler = DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_pretrained(folder))
                nll_pipe = DDPMExtPipeline(unet=unet, scheduler=DDPMExtScheduler.from_config(sampler.scheduler.config))
            else:
                sampler = nll_pipe = DDPMExtPipeline(unet=unet, scheduler=DDPMExtScheduler.from_pretrained(folder))
            sampler.set_progress_bar_config(disable=True)
            nll_pipe.set_progress_bar_config(disable=True)
            fds = result.setdefault("fd", {})
            steps_here = [s for s in args.steps if not (s == 1000 and recipe == "ext" and args.ext_1000_budgets
                                                         and float(info["budget_min"]) not in args.ext_1000_budgets)]
            for steps in steps_here:
                if str(steps) in fds and fds[str(steps)]["num_samples"] == args.num_samples:
                    continue
                if args.num_shards > 1:  # this process draws images shard, shard + n, ...; `--merge` scores them
                    fake, wall, cpu, nfe = _sample_shard(sampler, args, steps)
                    torch.save({"images": fake, "wall_s": wall, "cpu_s": cpu, "nfe": nfe},
                               os.path.join(folder, f"shard_{steps}_{args.shard}of{args.num_shards}.pt"))
                    print(f"{args.data} {recipe} {d} steps={steps}: shard {args.shard}/{args.num_shards} saved", flush=True)
                    continue
                if args.merge:
                    fake, wall, cpu, nfe = _merge_shards(folder, steps, args.merge, args.num_samples)
                else:
                    fake, wall, cpu, nfe = _sample(sampler, args.num_samples, steps, args.batch_size, args.seed)
                value = _fd(metric, fake)
                g = torch.Generator().manual_seed(2)
                boot = [_fd(metric, fake[torch.randint(0, len(fake), (len(fake),), generator=g)])
                        for _ in range(args.bootstrap)]
                fds[str(steps)] = {"fd": value, "bootstrap_se": float(np.std(boot)) if boot else None,
                                   "num_samples": args.num_samples, "wall_s_per_image": wall / args.num_samples,
                                   "cpu_s_per_image": cpu / args.num_samples, "nfe_per_image": nfe,
                                   "threads": args.threads}
                if args.grids:
                    _save_grid(fake[:64], os.path.join(folder, f"samples_{steps}.png"))
                print(f"{args.data} {recipe} {d} steps={steps}: FD {value:.2f} ± {fds[str(steps)]['bootstrap_se']}"
                      f"  {wall / args.num_samples * 1e3:.0f} ms/image wall, NFE {nfe:.0f}", flush=True)
                _write_merged(path, dict(result, info=info))
            if args.nll_images and (result.get("bits_per_dim") or {}).get("num_images") != len(nll):
                w0 = time.perf_counter()
                bpd = nll_pipe.bits_per_dim(nll, generator=torch.Generator().manual_seed(args.seed),
                                            timestep_batch_size=args.nll_timestep_batch_size)
                result["bits_per_dim"] = {"mean": float(bpd.mean()), "stderr": float(bpd.std() / math.sqrt(len(bpd))),
                                          "num_images": len(bpd), "wall_s": time.perf_counter() - w0}
                print(f"{args.data} {recipe} {d}: bits/dim {result['bits_per_dim']['mean']:.3f}"
                      f" ± {result['bits_per_dim']['stderr']:.3f}", flush=True)
            result.update(info=info, features=feature_desc, fd_floor=floor, fd_floor_n=floor_n)
            _write_merged(path, result)


def _write_merged(path: str, result: dict) -> None:
    """Update eval.json with `result` (per-step FD entries merged), so evaluations of one snapshot in concurrent
    processes (different step counts, bits/dim) keep each other's figures."""
    merged = json.load(open(path)) if os.path.isfile(path) else {}
    fd = dict(merged.get("fd", {}), **result.get("fd", {}))
    merged.update({k: v for k, v in result.items() if v is not None})
    merged["fd"] = fd
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(merged, fh, indent=1)
    os.replace(tmp, path)


def _save_grid(images: torch.Tensor, path: str) -> None:
    from PIL import Image

    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    c, h, w = images.shape[1:]
    grid = torch.zeros(c, rows * h, cols * w)
    for i, im in enumerate(images):
        grid[:, (i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = im
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if c == 1 else array).save(path)


# ---------------------------------------------------------------------------------------------------- report
def collect(out: str, data: str) -> dict:
    rows = {}
    for recipe in RECIPES:
        folder = os.path.join(out, "runs", data, recipe)
        if not os.path.isdir(folder):
            continue
        for d in os.listdir(folder):
            path = os.path.join(folder, d, "eval.json")
            if d.startswith("budget_") and os.path.isfile(path):
                rows.setdefault(recipe, []).append(json.load(open(path)))
        rows.get(recipe, []).sort(key=lambda r: r["info"]["budget_min"])
    return rows


def crossing(points, target: float):
    """First training time (linear interpolation between budgets) at which FD <= target; None if never."""
    prev = None
    for x, y in points:
        if y <= target:
            if prev is None or prev[1] <= target:
                return x
            return prev[0] + (prev[1] - target) / (prev[1] - y) * (x - prev[0])
        prev = (x, y)
    return None


def report(args) -> None:
    lines = []
    curves = {}
    runs = os.path.join(args.out, "runs")
    for data in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:  # "digits", "digits-<run_name>", "shapes"
        rows = collect(args.out, data)
        if not rows:
            continue
        if args.results_dir:
            os.makedirs(args.results_dir, exist_ok=True)
            with open(os.path.join(args.results_dir, f"results_{data}.json"), "w") as fh:
                json.dump(rows, fh, indent=1)
        any_row = next(iter(rows.values()))[0]
        lr = any_row["info"].get("learning_rate", OPTIM["learning_rate"])
        warmup = any_row["info"].get("lr_warmup_steps", OPTIM["lr_warmup_steps"])
        lines.append(f"### {data}, lr {lr:g}, warm-up {warmup} ({any_row.get('features')}; FD floor, {any_row.get('fd_floor_n')} real images vs"
                     f" the reference: {any_row.get('fd_floor', float('nan')):.2f})\n")
        lines.append("| recipe | budget (CPU-min) | steps | FD@1000 | FD@50 | FD@25 | bits/dim | sampling ms/image @1000, CPU / wall | @50 |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for recipe, rs in rows.items():
            for r in rs:
                fd = r.get("fd", {})

                def cell(s, fd=fd):
                    if str(s) not in fd:
                        return "–"
                    se = fd[str(s)].get("bootstrap_se")
                    return f"{fd[str(s)]['fd']:.2f}" + (f" ± {se:.2f}" if se else "")

                def ms(s, fd=fd):
                    if str(s) not in fd:
                        return "–"
                    return f"{fd[str(s)]['cpu_s_per_image'] * 1e3:.0f} / {fd[str(s)]['wall_s_per_image'] * 1e3:.0f}"

                bpd = r.get("bits_per_dim")
                bpd_cell = f"{bpd['mean']:.3f} ± {bpd['stderr']:.3f}" if bpd else "–"
                lines.append(f"| {recipe} | {r['info']['budget_min']:g} | {r['info']['steps']} | {cell(1000)} |"
                             f" {cell(50)} | {cell(25)} | {bpd_cell} | {ms(1000)} | {ms(50)} |")
        lines.append("")
        native = {"stock": 1000, "ext": 50}
        pts = {rec: [(r["info"]["budget_min"], r["fd"][str(native[rec])]["fd"]) for r in rs
                     if str(native[rec]) in r.get("fd", {})] for rec, rs in rows.items()}
        curves[data] = (rows, pts)
        if pts.get("stock") and pts.get("ext"):
            final_budget, final_fd = pts["stock"][-1]
            x = crossing(pts["ext"], final_fd)
            target = f"the stock recipe's final FD ({final_fd:.2f} at {final_budget:g} CPU-minutes, 1000 steps)"
            if x is not None:
                lines.append(f"**{data}: ddpm-ext (50 steps) reaches {target} after {x:.1f} CPU-minutes instead of"
                             f" {final_budget:g}.**\n")
            else:
                lines.append(f"**{data}: ddpm-ext (50 steps) does not reach {target} within its"
                             f" {pts['ext'][-1][0]:g} CPU-minutes (best: {min(y for _, y in pts['ext']):.2f}).**\n")
        bpd = {rec: [(r["info"]["budget_min"], r["bits_per_dim"]["mean"]) for r in rs if r.get("bits_per_dim")]
               for rec, rs in rows.items()}
        if bpd.get("stock") and bpd.get("ext"):
            final_budget, final_bpd = bpd["stock"][-1]
            x = crossing(bpd["ext"], final_bpd)
            when = (f"after {x:.1f} CPU-minutes instead of {final_budget:g}" if x is not None
                    else f"not within {bpd['ext'][-1][0]:g} CPU-minutes")
            lines.append(f"**{data}: ddpm-ext reaches the stock recipe's final bits/dim ({final_bpd:.3f} at"
                         f" {final_budget:g} CPU-minutes) {when}.**\n")
    text = "\n".join(lines)
    print(text)
    if args.plot and curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), dpi=120, squeeze=False)
        for ax, (data, (rows, pts)) in zip(axes[0], curves.items()):
            for rec, label, style, color in (("stock", "stock recipe, DDPMPipeline 1000 steps", "o-", "tab:blue"),
                                             ("ext", "ddpm-ext recipe, 50 steps", "s-", "tab:orange")):
                if pts.get(rec):
                    ax.plot(*zip(*pts[rec]), style, color=color, label=label)
            if "ext" in rows:
                ext1000 = [(r["info"]["budget_min"], r["fd"]["1000"]["fd"]) for r in rows["ext"] if "1000" in r.get("fd", {})]
                if ext1000:
                    ax.plot(*zip(*ext1000), "s:", color="gray", label="ddpm-ext recipe, 1000 steps")
            if "stock" in rows:
                s50 = [(r["info"]["budget_min"], r["fd"]["50"]["fd"]) for r in rows["stock"] if "50" in r.get("fd", {})]
                if s50:
                    ax.plot(*zip(*s50), "o:", color="tab:red", alpha=0.6, label="stock recipe, 50 steps")
            ax.set_xlabel("training budget (CPU-minutes, 1 thread)")
            ax.set_ylabel("Fréchet distance")
            ax.set_yscale("log")
            size = DATASETS[data.split("-", 1)[0]]["resolution"]
            ax.set_title(f"{data} ({size}×{size})")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"plot: {args.plot}")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")


# ---------------------------------------------------------------------------------------------------- CLI
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-data")
    p.add_argument("--out", required=True)
    p.add_argument("--num_shapes", type=int, default=2200)
    p = sub.add_parser("train", help="both recipes side by side, one process each")
    p.add_argument("--out", required=True)
    p.add_argument("--data", choices=list(DATASETS), default="digits")
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    p.add_argument("--budgets", type=float, nargs="+", default=[2, 5, 10, 20], help="CPU-minutes")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr_horizon_steps", type=int, default=10000,
                   help="the cosine schedule's num_training_steps (both recipes); must exceed the steps reached")
    p.add_argument("--learning_rate", type=float, default=OPTIM["learning_rate"],
                   help="peak AdamW learning rate of both recipes (default: train_unconditional.py's)")
    p.add_argument("--lr_warmup_steps", type=int, default=OPTIM["lr_warmup_steps"])
    p.add_argument("--run_name", help="runs go to <out>/runs/<data>-<run_name> (e.g. another learning rate)")
    p = sub.add_parser("_train_one")
    for name, kind in (("--recipe", str), ("--run_dir", str), ("--train_dir", str), ("--preset", str),
                       ("--resolution", int), ("--channels", int), ("--batch_size", int), ("--seed", int),
                       ("--lr_horizon_steps", int), ("--learning_rate", float), ("--lr_warmup_steps", int)):
        p.add_argument(name, type=kind, required=True)
    p.add_argument("--budgets", type=float, nargs="+", required=True)
    p = sub.add_parser("evaluate")
    p.add_argument("--out", required=True)
    p.add_argument("--data", choices=list(DATASETS), default="digits")
    p.add_argument("--run_name", help="evaluate <out>/runs/<data>-<run_name>")
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    p.add_argument("--steps", type=int, nargs="*", default=[50, 25, 1000])
    p.add_argument("--ext_1000_budgets", type=float, nargs="*", default=[],
                   help="evaluate the ddpm-ext model at 1000 steps only at these budgets (default: all)")
    p.add_argument("--budgets_to_eval", type=float, nargs="*", default=[])
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--bootstrap", type=int, default=50)
    p.add_argument("--nll_images", type=int, default=64)
    p.add_argument("--nll_timestep_batch_size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grids", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--num_shards", type=int, default=1,
                   help="with --shard k: only draw images k, k + n, ... and save them (concurrent processes)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--merge", type=int, default=0, metavar="N", help="score the images of N saved shards")
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--plot")
    p.add_argument("--markdown")
    p.add_argument("--results_dir", help="also write every snapshot's figures as results_<data>.json here")
    p = sub.add_parser("smoke", help="the whole chain at toy sizes (seconds)")
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    if args.command == "make-data":
        make_data(args.out, args.num_shapes, held_out=200 if args.num_shapes > 400 else 40)
    elif args.command == "train":
        launch(args)
    elif args.command == "_train_one":
        train_one(args)
    elif args.command == "evaluate":
        evaluate(args)
    elif args.command == "report":
        report(args)
    elif args.command == "smoke":
        smoke(args.out)


def smoke(out: str) -> None:
    """make-data (small) → train both recipes for 0.02 and 0.04 CPU-minutes → evaluate → report, on digits and
    shapes (the budgets here are seconds; the figures mean nothing)."""
    me = [sys.executable, os.path.abspath(__file__)]

    def run(*a):
        subprocess.run([*me, *a], check=True)

    run("make-data", "--out", out, "--num_shapes", "300")
    for data in DATASETS:
        run("train", "--out", out, "--data", data, "--budgets", "0.02", "0.04", "--batch_size", "4",
            "--lr_horizon_steps", "100000")
        run("evaluate", "--out", out, "--data", data, "--steps", "2", "5",
            "--num_samples", "8", "--batch_size", "8", "--bootstrap", "2", "--nll_images", "2",
            "--nll_timestep_batch_size", "250")
    # another optimizer setting for both recipes, in its own run folder (runs/digits-lr2e-3)
    run("train", "--out", out, "--data", "digits", "--budgets", "0.02", "--batch_size", "4", "--lr_horizon_steps", "100000",
        "--learning_rate", "2e-3", "--lr_warmup_steps", "10", "--run_name", "lr2e-3")
    run("evaluate", "--out", out, "--data", "digits", "--run_name", "lr2e-3", "--steps", "2", "--num_samples", "8",
        "--batch_size", "8", "--bootstrap", "2", "--nll_images", "0")
    run("report", "--out", out, "--plot", os.path.join(out, "vs_stock.png"), "--markdown", os.path.join(out, "table.md"),
        "--results_dir", out)


if __name__ == "__main__":
    main()
