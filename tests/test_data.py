import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from ddpm_ext.data import (
    find_image_column,
    load_digits_dataset,
    load_image_dataset,
    make_transform,
    preprocess_image,
    pretensorize,
    split_dataset,
    uint8_to_pixel_values,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture()
def mixed_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, mode="L").save(folder / "gray.png")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :4, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    palette = Image.new("P", (8, 8))
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(folder / "palette.png")
    Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8), mode="RGB").save(folder / "rgb.jpg", quality=95)
    return folder


def _by_name(dataset):
    raw = dataset.cast_column("image", __import__("datasets").Image(decode=False))
    return {item["path"].rsplit("/", 1)[-1]: i for i, item in enumerate(raw["image"])}


def test_digits_has_1797_rows_and_10_labels(digits):
    assert len(digits) == 1797
    assert sorted(set(digits["label"])) == list(range(10))
    assert digits.features["label"].num_classes == 10


def test_digits_pixels_are_levels_0_to_16_scaled_by_integer_rounding(digits):
    expected = (load_digits().images.astype(np.int64) * 255 + 8) // 16
    got = np.stack([np.asarray(digits[i]["image"]) for i in (0, 1, 500, 1796)])
    assert digits[0]["image"].mode == "L"
    np.testing.assert_array_equal(got, expected[[0, 1, 500, 1796]])


def test_transform_maps_uint8_exactly_onto_minus1_1_256_level_grid(digits):
    transform = make_transform(resolution=8, channels=1)
    batch = transform({"image": [digits[i]["image"] for i in range(20)]})
    values = torch.stack(batch["pixel_values"])
    u = np.stack([np.asarray(digits[i]["image"]) for i in range(20)])
    np.testing.assert_array_equal(values[:, 0].numpy(), (u.astype(np.float32) / np.float32(127.5)) - 1)
    levels = (values.double() + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert values.min() == -1.0 and values.max() == 1.0


def test_transform_output_shape_and_dtype_via_set_transform(digits):
    ds = digits.select(range(4))
    ds.set_transform(make_transform(resolution=16, channels=3))
    item = ds[0]["pixel_values"]
    assert item.shape == (3, 16, 16) and item.dtype == torch.float32
    assert -1.0 <= item.min() and item.max() <= 1.0


def test_image_folder_with_gray_rgba_palette_jpeg_loads_in_1_and_3_channels(mixed_folder):
    ds = load_image_dataset(train_data_dir=str(mixed_folder), cache_dir=str(mixed_folder.parent / "cache"))
    assert len(ds) == 4 and "image" in ds.column_names
    names = _by_name(ds)
    for channels in (1, 3):
        out = make_transform(8, channels)({"image": ds["image"]})["pixel_values"]
        assert all(x.shape == (channels, 8, 8) for x in out)
    rgb = make_transform(8, 3)({"image": ds["image"]})["pixel_values"]
    gray = np.arange(64).reshape(8, 8) * 4 / 127.5 - 1
    for c in range(3):
        np.testing.assert_allclose(rgb[names["gray.png"]][c].numpy(), gray, atol=1e-6)
    rgba = rgb[names["rgba.png"]]
    assert torch.allclose(rgba[:, :, :4], torch.tensor([200, 0, 0]).view(3, 1, 1) / 127.5 - 1)
    assert torch.all(rgba[:, :, 4:] == 1.0)  # transparent pixels composited over white
    pal = rgb[names["palette.png"]]
    assert torch.allclose(pal[:, 0, 0], torch.tensor([10.0, 20.0, 30.0]) / 127.5 - 1)
    assert torch.all(pal[:, 1:, :] == -1.0)


def test_parquet_file_loads_same_pixels(tmp_path, digits):
    subset = digits.select(range(10))
    path = tmp_path / "digits.parquet"
    subset.to_parquet(str(path))
    ds = load_image_dataset(train_data_dir=str(path), cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 10 and ds["label"] == subset["label"]
    np.testing.assert_array_equal(np.asarray(ds[3]["image"]), np.asarray(subset[3]["image"]))


def test_parquet_with_raw_png_bytes_column_named_img_is_detected(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs = []
    for v in (0, 255):
        buf = io.BytesIO()
        Image.new("L", (4, 4), v).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    pq.write_table(pa.table({"img": blobs, "n": [0, 1]}), tmp_path / "raw.parquet")
    ds = load_image_dataset(train_data_dir=str(tmp_path / "raw.parquet"), cache_dir=str(tmp_path / "cache"))
    assert np.asarray(ds[1]["image"]).tolist() == [[255] * 4] * 4


def test_corrupt_png_error_names_the_file(mixed_folder):
    (mixed_folder / "broken.png").write_bytes(b"this is not a png at all")
    with pytest.raises(ValueError, match=r"unreadable image: .*broken\.png"):
        load_image_dataset(train_data_dir=str(mixed_folder), cache_dir=str(mixed_folder.parent / "cache"))


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_empty_folder_raises_value_error(tmp_path, content):
    folder = tmp_path / "data"
    folder.mkdir()
    if content:
        (folder / content).write_text("no images here")
    with pytest.raises(ValueError, match="contains no images"):
        load_image_dataset(train_data_dir=str(folder), cache_dir=str(tmp_path / "cache"))


def test_missing_image_column_error_lists_columns(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"a": [1, 2], "b": [3, 4]})
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        find_image_column(ds)
    ds.to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match="no image column"):
        load_image_dataset(train_data_dir=str(tmp_path / "x.parquet"), cache_dir=str(tmp_path / "cache"))


def test_transform_random_flip_yields_exact_mirror_images():
    image = Image.fromarray(np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1)), mode="L")
    plain = make_transform(8, 1)({"image": [image]})["pixel_values"][0]
    torch.manual_seed(0)
    outs = make_transform(8, 1, random_flip=True)({"image": [image] * 32})["pixel_values"]
    mirrored = plain[..., ::1].numpy()[..., ::-1].copy()
    kinds = set()
    for out in outs:
        if torch.equal(out, plain):
            kinds.add("plain")
        else:
            np.testing.assert_array_equal(out.numpy(), mirrored)
            kinds.add("mirrored")
    assert kinds == {"plain", "mirrored"}


def test_pretensorize_equals_transform_row_by_row(digits):
    ds = digits.select(range(40))
    tensor = pretensorize(ds, resolution=16, channels=3)
    assert tensor.shape == (40, 3, 16, 16) and tensor.dtype == torch.uint8
    expected = torch.stack(make_transform(16, 3, center_crop=True)({"image": ds["image"]})["pixel_values"])
    assert torch.equal(uint8_to_pixel_values(tensor), expected)


def test_center_crop_of_wide_image_keeps_middle_columns():
    array = np.arange(8 * 16, dtype=np.uint8).reshape(8, 16)
    out = preprocess_image(Image.fromarray(array, mode="L"), resolution=8, channels=1, center_crop=True)
    np.testing.assert_array_equal(out[0].numpy(), array[:, 4:12])


def test_16bit_grayscale_is_scaled_not_clipped():
    array = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    out = preprocess_image(Image.fromarray(array), resolution=4, channels=1)
    assert int(out[0, 0, 0]) == round(32767 / 257)


def test_bad_channels_and_interpolation_raise():
    with pytest.raises(ValueError, match="channels=2"):
        make_transform(8, 2)
    with pytest.raises(ValueError, match="interpolation='cubic'"):
        make_transform(8, 1, interpolation="cubic")


def test_split_dataset_is_deterministic_disjoint_and_complete(digits):
    train, test = split_dataset(digits, test_size=0.1, seed=0)
    train2, test2 = split_dataset(digits, test_size=0.1, seed=0)
    assert len(test) == 180 and len(train) == 1617
    def key(ds):
        return [tuple(np.asarray(im).ravel()) + (lab,) for im, lab in zip(ds["image"], ds["label"])]
    assert key(test) == key(test2) and key(train) == key(train2)
    assert sorted(key(train) + key(test)) == sorted(key(digits))
    _, other = split_dataset(digits, test_size=0.1, seed=1)
    assert key(other) != key(test)


def test_split_dataset_holds_the_rows_of_datasets_train_test_split_in_dataset_order(digits):
    rows = digits.select(range(300)).add_column("row", list(range(300)))
    train, test = split_dataset(rows, test_size=30, seed=3)
    theirs = rows.train_test_split(test_size=30, seed=3)
    assert test["row"] == sorted(theirs["test"]["row"]) and train["row"] == sorted(theirs["train"]["row"])
    assert theirs["test"]["row"] != sorted(theirs["test"]["row"])  # datasets' order is shuffled; ours is not
