"""Training and evaluation images as 🤗 `datasets`.

The default data set is scikit-learn's bundled 8×8 handwritten digits (1,797 real scans, no download). Any
`datasets` name (cached or local), a local image folder or a parquet file works too.

Decisions:

- Pixels: images are 8-bit, so model inputs live on the 256-level grid `u / 127.5 - 1`, `u` in 0..255, exactly
  -1 and 1 at the ends; the digits' 17 levels 0..16 map to `u = round(v * 255 / 16)`.
- Resizing uses PIL's bilinear filter by default (as diffusers' `train_unconditional.py`). Upscaling 8×8 digits
  to 16×16 with bilinear gives smooth strokes; nearest would make every pixel a 2×2 block, so three quarters of
  the pixels would be copies, which flatters bits/dim and teaches the model blocks instead of strokes. Both keep
  the 256-level grid because PIL rounds back to uint8. `interpolation="nearest"` is available.
- Channels: 1 → PIL mode "L" (ITU-R 601 luma), 3 → "RGB". Transparent images ("RGBA", "LA", palette with
  transparency) are composited over a white background, the way image viewers show them. "CMYK" uses PIL's
  conversion; 16-bit grayscale ("I;16", "I") is scaled by 1/257 rather than clipped.
- Class labels (`read_class_labels`, for class-conditional training): a `ClassLabel` column gives its ids and
  names; an integer column its values with names "0".."max"; a string column the index of each value among the
  sorted distinct values (names: those values). Labels are read from the whole data set before any split, so a
  held-out split that misses a class does not change the ids.
- Corrupt or unreadable images: fail early, naming the file. `load_image_dataset` decodes every image of a local
  folder or parquet file once (`validate_images`) and raises `ValueError("unreadable image: <path>: <reason>")`
  before any training starts; for hub data sets call `validate_images` yourself (it decodes everything).
"""

import io
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import datasets
import numpy as np
import torch
from PIL import Image

__all__ = [
    "load_digits_dataset",
    "load_image_dataset",
    "find_image_column",
    "validate_images",
    "make_transform",
    "preprocess_image",
    "pretensorize",
    "uint8_to_pixel_values",
    "split_indices",
    "split_dataset",
    "read_class_labels",
]

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
_CHANNEL_MODES = {1: "L", 3: "RGB"}
_IMAGE_EXTENSIONS = set(datasets.packaged_modules.imagefolder.ImageFolder.EXTENSIONS)


def load_digits_dataset() -> datasets.Dataset:
    """The 1,797 8×8 handwritten digits bundled with scikit-learn, as a `datasets.Dataset`.

    Returns:
        `datasets.Dataset`: columns "image" (PIL grayscale "L", 8×8, values `round(v * 255 / 16)` for the original
        levels `v` in 0..16) and "label" (`ClassLabel` with names "0".."9").
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.floor(digits.images * (255.0 / 16.0) + 0.5).astype(np.uint8)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p, mode="L") for p in pixels], "label": digits.target.tolist()},
        features=features,
    )


def _has_parquet(path: str) -> bool:
    if os.path.isfile(path):
        return path.endswith(".parquet")
    for _, _, files in os.walk(path):
        if any(f.endswith(".parquet") for f in files):
            return True
    return False


def _parquet_rows(path: str) -> int:
    """Rows in a parquet file or in every parquet file below a folder (from the footers, no data is read)."""
    import pyarrow.parquet as pq

    files = [path] if os.path.isfile(path) else [
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names if f.endswith(".parquet")
    ]
    rows = 0
    for f in files:
        try:
            rows += pq.ParquetFile(f).metadata.num_rows
        except Exception as err:  # pyarrow's ArrowInvalid / OSError for a damaged or non-parquet file
            raise ValueError(f"unreadable parquet file: {f}: {type(err).__name__}: {' '.join(str(err).split())}") from err
    return rows


def _has_images(path: str) -> bool:
    for _, _, files in os.walk(path):
        if any(os.path.splitext(f)[1].lower() in _IMAGE_EXTENSIONS for f in files):
            return True
    return False


def find_image_column(dataset: datasets.Dataset, image_column: Optional[str] = None) -> str:
    """Name of the column holding the images.

    Args:
        dataset (`datasets.Dataset`): the data set.
        image_column (`str`, *optional*): the column to use; checked to exist. If `None`: "image", else "img",
            else the first column with a `datasets.Image` feature.

    Returns:
        `str`: the column name.
    """
    columns = list(dataset.column_names)
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"image_column={image_column!r} is not a column of the data set; columns: {columns}")
        return image_column
    for name in ("image", "img"):
        if name in columns:
            return name
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise ValueError(
        f"no image column found (looked for 'image', 'img' or an Image feature); columns: {columns}. "
        "Pass image_column=<name>."
    )


def validate_images(dataset: datasets.Dataset, image_column: str = "image") -> int:
    """Decode every image once so that a corrupt file fails now, not in the middle of training.

    Args:
        dataset (`datasets.Dataset`): the data set.
        image_column (`str`, defaults to "image"): the column with a `datasets.Image` feature.

    Returns:
        `int`: the number of images checked.
    """
    if image_column not in dataset.column_names:
        raise ValueError(f"image_column={image_column!r} is not a column; columns: {dataset.column_names}")
    raw = dataset.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    count = 0
    for start in range(0, len(raw), 1024):
        for i, item in enumerate(raw[start : start + 1024][image_column]):
            where = (item or {}).get("path") or f"row {start + i}"
            try:
                if item is None:
                    raise ValueError("missing image")
                source = item["bytes"] if item.get("bytes") is not None else item["path"]
                with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                    img.load()
            except Exception as err:
                raise ValueError(f"unreadable image: {where}: {type(err).__name__}: {err}") from err
            count += 1
    return count


def load_image_dataset(
    dataset_name: Optional[str] = None,
    dataset_config_name: Optional[str] = None,
    train_data_dir: Optional[str] = None,
    cache_dir: Optional[str] = None,
    split: str = "train",
    image_column: Optional[str] = None,
    validate: Optional[bool] = None,
) -> datasets.Dataset:
    """Load an image data set: the embedded digits, a local folder or parquet file, or a `datasets` name.

    Args:
        dataset_name (`str`, *optional*): a `datasets` name or local script/folder; offline it must be cached.
        dataset_config_name (`str`, *optional*): the data set's configuration.
        train_data_dir (`str`, *optional*): a folder of images (loaded with "imagefolder"), or a parquet file or a
            folder of parquet files (loaded with "parquet"). Takes precedence over `dataset_name`.
        cache_dir (`str`, *optional*): `datasets` cache folder.
        split (`str`, defaults to "train"): the split to return.
        image_column (`str`, *optional*): the image column; detected when `None` (see `find_image_column`).
        validate (`bool`, *optional*): decode every image up front (see `validate_images`). `None` validates local
            files (`train_data_dir`) only.

    Returns:
        `datasets.Dataset`: the split, with its image column named "image" and cast to `datasets.Image`.
    """
    if dataset_name is None and train_data_dir is None:
        dataset = load_digits_dataset()
    elif train_data_dir is not None:
        if not os.path.exists(train_data_dir):
            raise ValueError(f"train_data_dir={train_data_dir!r} does not exist")
        if _has_parquet(train_data_dir):
            data_files = (
                train_data_dir
                if os.path.isfile(train_data_dir)
                else os.path.join(train_data_dir, "**", "*.parquet")
            )
            if _parquet_rows(train_data_dir) == 0:  # datasets fails on 0 rows with an opaque DatasetGenerationError
                raise ValueError(f"train_data_dir={train_data_dir!r} holds parquet files with 0 rows; it needs >= 1 image")
            dataset = datasets.load_dataset("parquet", data_files={split: data_files}, split=split, cache_dir=cache_dir)
        elif os.path.isdir(train_data_dir) and _has_images(train_data_dir):
            dataset = datasets.load_dataset("imagefolder", data_dir=train_data_dir, split=split, cache_dir=cache_dir)
        else:
            raise ValueError(
                f"train_data_dir={train_data_dir!r} contains no images and no parquet files; "
                f"allowed image extensions: {sorted(_IMAGE_EXTENSIONS)}"
            )
    else:
        try:
            dataset = datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
        except (ConnectionError, FileNotFoundError) as err:  # not cached while offline, unknown name, no network
            offline = datasets.config.HF_HUB_OFFLINE or getattr(datasets.config, "HF_DATASETS_OFFLINE", False)
            hint = " (offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set, so it must already be cached)" if offline else ""
            raise ValueError(
                f"dataset_name={dataset_name!r} could not be loaded{hint}: {' '.join(str(err).split())}; allowed: a"
                " cached or reachable `datasets` name, or a local folder / parquet file with train_data_dir"
            ) from err

    if len(dataset) == 0:
        source = train_data_dir or dataset_name
        raise ValueError(f"the data set {source!r} (split {split!r}) is empty")
    column = find_image_column(dataset, image_column)
    feature = dataset.features[column]
    if not isinstance(feature, datasets.Image):
        allowed = (datasets.Value("binary"), datasets.Value("large_binary"), datasets.Value("string"))
        is_struct = isinstance(feature, dict) and set(feature) <= {"bytes", "path"}
        if feature not in allowed and not is_struct:
            raise ValueError(
                f"column {column!r} has feature {feature}, not images; allowed: datasets.Image, binary bytes, "
                "file paths or {'bytes','path'} structs"
            )
        dataset = dataset.cast_column(column, datasets.Image())
    if column != "image":
        if "image" in dataset.column_names:
            raise ValueError(
                f"image_column={column!r} was chosen but another column is already named 'image'; "
                "rename or drop it first"
            )
        dataset = dataset.rename_column(column, "image")
    if validate or (validate is None and train_data_dir is not None):
        validate_images(dataset, "image")
    return dataset


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.floor(array + 0.5), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != mode:
        image = image.convert(mode)
    return image


def _check_transform_args(resolution: int, channels: int, interpolation: str) -> None:
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution={resolution!r} must be a positive int")
    if channels not in _CHANNEL_MODES:
        raise ValueError(f"channels={channels!r} is not supported; allowed: {sorted(_CHANNEL_MODES)}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not supported; allowed: {sorted(_INTERPOLATIONS)}")


def preprocess_image(
    image: Image.Image,
    resolution: int,
    channels: int,
    center_crop: bool = True,
    interpolation: str = "bilinear",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Convert one PIL image to a uint8 tensor `[C, resolution, resolution]` (no flip).

    The shorter side is resized to `resolution`, then a square is cropped: in the center, or at a random offset
    drawn from `generator` when `center_crop=False` (as diffusers' `train_unconditional.py`).

    Args:
        image (`PIL.Image.Image`): the image, any mode.
        resolution (`int`): output height and width.
        channels (`int`): 1 (grayscale) or 3 (RGB).
        center_crop (`bool`, defaults to `True`): crop the center, else a random square.
        interpolation (`str`, defaults to "bilinear"): one of "nearest", "bilinear", "bicubic", "lanczos", "box".
        generator (`torch.Generator`, *optional*): random source for the crop offset.

    Returns:
        `torch.Tensor`: uint8 `[channels, resolution, resolution]`.
    """
    _check_transform_args(resolution, channels, interpolation)
    image = _to_mode(image, _CHANNEL_MODES[channels])
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if new_size != (width, height):
        image = image.resize(new_size, resample=_INTERPOLATIONS[interpolation])
    width, height = image.size
    if center_crop:
        left, top = (width - resolution) // 2, (height - resolution) // 2
    else:
        left = int(torch.randint(0, width - resolution + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - resolution + 1, (1,), generator=generator))
    if (width, height) != (resolution, resolution):
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def uint8_to_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 model inputs `u / 127.5 - 1` in [-1, 1].

    Args:
        images (`torch.Tensor`): uint8 tensor of any shape.

    Returns:
        `torch.Tensor`: float32 tensor of the same shape.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got dtype {images.dtype}")
    return images.to(torch.float32) / 127.5 - 1.0


def make_transform(
    resolution: int,
    channels: int,
    center_crop: bool = False,
    random_flip: bool = False,
    image_column: str = "image",
    interpolation: str = "bilinear",
) -> Callable[[Dict[str, List[Any]]], Dict[str, List[torch.Tensor]]]:
    """A batch transform for `Dataset.set_transform` producing model inputs.

    Args:
        resolution (`int`): output height and width.
        channels (`int`): 1 (grayscale "L") or 3 ("RGB").
        center_crop (`bool`, defaults to `False`): center crop after resizing the shorter side, else random crop.
        random_flip (`bool`, defaults to `False`): flip horizontally with probability 0.5 (torch's global RNG).
        image_column (`str`, defaults to "image"): the column with PIL images.
        interpolation (`str`, defaults to "bilinear"): PIL resampling filter name.

    Returns:
        `Callable`: maps a batch dict to `{"pixel_values": [float32 tensor [C, H, W] in [-1, 1], ...]}`.
    """
    _check_transform_args(resolution, channels, interpolation)

    def transform(batch: Dict[str, List[Any]]) -> Dict[str, List[torch.Tensor]]:
        if image_column not in batch:
            raise ValueError(f"image_column={image_column!r} is not in the batch; columns: {list(batch)}")
        pixel_values = []
        for image in batch[image_column]:
            pixels = preprocess_image(image, resolution, channels, center_crop, interpolation)
            if random_flip and torch.rand(()) < 0.5:
                pixels = pixels.flip(-1)
            pixel_values.append(uint8_to_pixel_values(pixels))
        return {"pixel_values": pixel_values}

    return transform


def pretensorize(
    dataset: datasets.Dataset,
    resolution: int,
    channels: int,
    image_column: str = "image",
    interpolation: str = "bilinear",
    batch_size: int = 512,
) -> torch.Tensor:
    """Decode a (small) data set once into a uint8 tensor `[N, C, H, W]`.

    Training then indexes this tensor and does no per-step PIL work; apply `uint8_to_pixel_values` to each batch
    (the training loop flips batches itself, from its own generator). Non-square images are center cropped (the result is deterministic).

    Args:
        dataset (`datasets.Dataset`): the data set, without a transform set on it.
        resolution (`int`): output height and width.
        channels (`int`): 1 or 3.
        image_column (`str`, defaults to "image"): the image column.
        interpolation (`str`, defaults to "bilinear"): PIL resampling filter name.
        batch_size (`int`, defaults to 512): rows decoded at a time.

    Returns:
        `torch.Tensor`: uint8 `[N, channels, resolution, resolution]`.
    """
    _check_transform_args(resolution, channels, interpolation)
    if image_column not in dataset.column_names:
        raise ValueError(f"image_column={image_column!r} is not a column; columns: {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError("cannot pretensorize an empty data set")
    images = dataset.select_columns([image_column]).with_format(None)
    out = torch.empty((len(images), channels, resolution, resolution), dtype=torch.uint8)
    for start in range(0, len(images), batch_size):
        for i, image in enumerate(images[start : start + batch_size][image_column]):
            out[start + i] = preprocess_image(image, resolution, channels, True, interpolation)
    return out


def split_indices(num_rows: int, test_size: Union[float, int] = 0.1, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled train/test indices.

    Args:
        num_rows (`int`): number of rows.
        test_size (`float` or `int`, defaults to 0.1): fraction in (0, 1) or a count in [1, num_rows).
        seed (`int`, defaults to 0): seed of `numpy.random.default_rng`.

    Returns:
        `Tuple[np.ndarray, np.ndarray]`: sorted train indices and sorted test indices.
    """
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size={test_size!r} as a fraction must be in (0, 1)")
        num_test = int(round(num_rows * test_size))
    else:
        num_test = int(test_size)
    if not 1 <= num_test < num_rows:
        raise ValueError(f"test_size={test_size!r} gives {num_test} test rows out of {num_rows}; need 1..{num_rows - 1}")
    perm = np.random.default_rng(seed).permutation(num_rows)
    return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def split_dataset(
    dataset: datasets.Dataset, test_size: Union[float, int] = 0.1, seed: int = 0
) -> Tuple[datasets.Dataset, datasets.Dataset]:
    """Deterministic held-out split (e.g. for bits/dim or Fréchet distance on unseen images).

    For a row count the rows are those of `dataset.train_test_split(test_size, seed=seed)` (the same permutation),
    kept in the data set's order; that order is what training and its resume depend on, so datasets' own split
    (shuffled order; a fraction rounded up, not to nearest) is not used in its place. `split_indices` is the same
    split for tensors.

    Args:
        dataset (`datasets.Dataset`): the data set.
        test_size (`float` or `int`, defaults to 0.1): fraction in (0, 1) or a row count.
        seed (`int`, defaults to 0): the split's seed; same seed, same split.

    Returns:
        `Tuple[datasets.Dataset, datasets.Dataset]`: (train, test), disjoint, covering all rows.
    """
    train_idx, test_idx = split_indices(len(dataset), test_size, seed)
    return dataset.select(train_idx, keep_in_memory=True), dataset.select(test_idx, keep_in_memory=True)


_INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_STRING_DTYPES = ("string", "large_string")


def read_class_labels(dataset: datasets.Dataset, label_column: str = "label") -> Tuple[torch.Tensor, List[str]]:
    """The class label of every row as ids 0..K-1, and the K class names (id k is named `names[k]`).

    Reads only the label column (cheap; call it before `set_transform`).

    Args:
        dataset (`datasets.Dataset`): the data set.
        label_column (`str`, defaults to "label"): the column with the labels: a `datasets.ClassLabel` (the
            embedded digits; "imagefolder" with one sub-folder per class) gives its ids and `.names`; an integer
            column its values (>= 0) with names "0".."max"; a string column the index of each value among the sorted
            distinct values, which are the names.

    Returns:
        `Tuple[torch.Tensor, List[str]]`: int64 ids `[len(dataset)]` and the class names.
    """
    columns = list(dataset.column_names)
    if label_column not in columns:
        raise ValueError(f"label_column={label_column!r} is not a column of the data set; columns: {columns}")
    feature = dataset.features[label_column]
    allowed = "a ClassLabel, integer or string column without missing values"
    is_class_label = isinstance(feature, datasets.ClassLabel)
    dtype = getattr(feature, "dtype", None) if isinstance(feature, datasets.Value) else None
    if not is_class_label and dtype not in _INTEGER_DTYPES + _STRING_DTYPES:
        raise ValueError(f"label column {label_column!r} has feature {feature}; allowed: {allowed}")
    values = dataset.select_columns([label_column]).with_format("arrow")[:].column(label_column)
    if values.null_count:
        first = next(i for i, v in enumerate(values.to_pylist()) if v is None)
        raise ValueError(
            f"label column {label_column!r} has {values.null_count} missing value(s) (first at row {first});"
            f" allowed: {allowed}"
        )
    if dtype in _STRING_DTYPES:
        strings = values.to_pylist()
        names = sorted(set(strings))
        index = {name: i for i, name in enumerate(names)}
        return torch.tensor([index[v] for v in strings], dtype=torch.int64), names
    ids = torch.from_numpy(np.asarray(values.to_numpy(), dtype=np.int64).copy())
    if len(ids) and int(ids.min()) < 0:
        row = int((ids < 0).nonzero()[0])
        raise ValueError(
            f"label column {label_column!r} holds the negative label {int(ids[row])} at row {row} (a ClassLabel uses"
            " -1 for a missing label); allowed: ids >= 0"
        )
    if is_class_label:
        names = list(feature.names)
        if len(ids) and int(ids.max()) >= len(names):
            raise ValueError(
                f"label column {label_column!r} holds the id {int(ids.max())}, beyond its {len(names)} ClassLabel"
                f" names; allowed: ids 0..{len(names) - 1}"
            )
        return ids, names
    return ids, [str(i) for i in range(int(ids.max()) + 1 if len(ids) else 0)]
