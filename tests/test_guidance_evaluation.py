"""Class-conditional models through the command line and the evaluation: `ddpm-ext sample --class`,
`ddpm-ext evaluate --guidance-scales`, and the class accuracy of `evaluate_guidance` checked with stand-in models
that return real digits of the right (or a wrong) class."""

import json
import types

import numpy as np
import pytest
import torch
from _models import tiny_unet
from PIL import Image

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
from ddpm_ext.cli import main
from ddpm_ext.evaluation import (
    DigitsClassifierFeatures,
    classify_digits,
    digit_of_each_class,
    evaluate_guidance,
    reference_digits,
)

DIGITS = {i: str(i) for i in range(10)}


@pytest.fixture
def conditional_dir(tmp_path):
    unet = tiny_unet(1, 2, num_class_embeds=11)
    pipe = DDPMExtPipeline(unet, DDPMExtScheduler(num_train_timesteps=20, variance_type="learned_range"), id2label=DIGITS)
    pipe.save_pretrained(tmp_path / "conditional")
    return tmp_path / "conditional"


@pytest.fixture
def unconditional_dir(tmp_path):
    pipe = DDPMExtPipeline(tiny_unet(1, 2), DDPMExtScheduler(num_train_timesteps=20, variance_type="learned_range"))
    pipe.save_pretrained(tmp_path / "unconditional")
    return tmp_path / "unconditional"


def _grid_shape(path):
    return Image.open(path).size  # (width, height)


def test_sample_one_class(conditional_dir, tmp_path, capsys):
    out = tmp_path / "sevens.png"
    argv = ["sample", "--model", str(conditional_dir), "--class", "7", "--guidance-scale", "3", "--num", "4",
            "--steps", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 images of class 7" in printed and "guidance scale 3" in printed
    width, height = _grid_shape(out)
    assert width == height  # 4 images: a 2×2 grid


def test_sample_defaults_to_one_row_per_class(conditional_dir, tmp_path, capsys):
    out = tmp_path / "rows.png"
    assert main(["sample", "--model", str(conditional_dir), "--num", "3", "--steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "30 images, one row per class (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in printed and "guidance scale 1.5" in printed
    width, height = _grid_shape(out)
    # 10 rows × 3 columns of 8×8 tiles with 1-pixel borders, upscaled by one integer factor
    assert width * (10 * 9 + 1) == height * (3 * 9 + 1)


def test_sample_several_classes_by_name_and_id(conditional_dir, tmp_path, capsys):
    out = tmp_path / "two.png"
    assert main(["sample", "--model", str(conditional_dir), "--class", "3,7", "--num", "2", "--steps", "2",
                 "--guidance-scale", "0", "--out", str(out)]) == 0
    assert "4 images, one row per class (3, 7)" in capsys.readouterr().out
    width, height = _grid_shape(out)
    assert width * (2 * 9 + 1) == height * (2 * 9 + 1)


@pytest.mark.parametrize(
    "model, flags, message",
    [
        ("unconditional", ["sample", "--class", "7"], "--class needs a class-conditional model"),
        ("unconditional", ["sample", "--guidance-scale", "2"], "--guidance-scale needs a class-conditional model"),
        ("conditional", ["sample", "--class", "12"], "--class '12' is not a class of this model"),
        ("conditional", ["sample", "--class", "seven"], "allowed: 'all', a name of ['0', '1'"),
        ("conditional", ["sample", "--class", "7", "--guidance-scale", "-1"], "guidance_scale must be a finite number"),
        ("unconditional", ["evaluate", "--guidance-scales", "1,3"], "--guidance-scales needs a class-conditional model"),
        ("conditional", ["evaluate", "--guidance-scales", "one"], "--guidance-scales must be comma-separated numbers"),
        ("conditional", ["evaluate", "--guidance-scales", "1,-2"], "--guidance-scales must be finite numbers >= 0"),
        ("conditional", ["evaluate", "--guidance-steps", "0"], "--guidance-steps must be >= 1"),
    ],
)
def test_bad_class_flags_are_one_line_errors(conditional_dir, unconditional_dir, tmp_path, model, flags, message, capsys):
    folder = conditional_dir if model == "conditional" else unconditional_dir
    argv = [flags[0], "--model", str(folder), *flags[1:]]
    if flags[0] == "sample":
        argv += ["--steps", "2", "--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddpm-ext: error:") and "\n" not in err and message in err, err


def test_evaluate_writes_the_guidance_table(conditional_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(conditional_dir), "--num-samples", "10", "--steps", "2", "--guidance-scales",
            "0,3", "--guidance-steps", "2", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())["guidance"]
    assert [r["guidance_scale"] for r in results["guidance"]] == [0.0, 3.0]
    for row in results["guidance"]:
        assert 0.0 <= row["class_accuracy"] <= 1.0 and np.isfinite(row["frechet_distance"])
        assert set(row["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert results["real_accuracy"] > 0.9 and (out / "guidance.png").is_file()
    printed = capsys.readouterr().out
    assert "| guidance scale | class accuracy | Fréchet distance |" in printed and "| 3 |" in printed


class _RealDigitsModel:
    """Stands in for a class-conditional pipeline: returns held-out real digits of the asked-for class (shifted by
    `offset` classes), so the class accuracy `evaluate_guidance` reports is known."""

    def __init__(self, offset: int = 0, names=None):
        self.num_classes = 10
        self.id2label = names or DIGITS
        self.offset = offset
        images = reference_digits(8, split="test").float() / 255
        _, test_idx = __import__("ddpm_ext.data", fromlist=["split_indices"]).split_indices(1797, 0.1, 0)
        digits = DigitsClassifierFeatures.digits_tensors()[1][torch.from_numpy(test_idx)]
        self.by_digit = {d: images[digits == d] for d in range(10)}
        self.guidance_seen = []

    def __call__(self, batch_size, generator, num_inference_steps, eta, output_type, class_labels, guidance_scale):
        self.guidance_seen.append(guidance_scale)
        picks = []
        for i, label in enumerate(class_labels.tolist()):
            pool = self.by_digit[(int(self.id2label[label]) + self.offset) % 10]
            picks.append(pool[int(generator[i].initial_seed()) % len(pool)])
        return types.SimpleNamespace(images=torch.stack(picks))


def test_class_accuracy_counts_samples_of_the_asked_for_digit():
    real = reference_digits(8)
    right = evaluate_guidance(_RealDigitsModel(), real, [1.0, 4.0], num_samples=60, steps=1)
    wrong = evaluate_guidance(_RealDigitsModel(offset=1), real, [2.0], num_samples=60, steps=1)
    assert all(row["class_accuracy"] >= 0.9 for row in right["guidance"])
    assert wrong["guidance"][0]["class_accuracy"] <= 0.1
    # class ids map to digits through the names: a model whose id k means digit 9 - k
    reversed_names = {i: str(9 - i) for i in range(10)}
    model = _RealDigitsModel(names=reversed_names)
    assert evaluate_guidance(model, real, [1.0], num_samples=30, steps=1)["guidance"][0]["class_accuracy"] >= 0.9
    assert model.guidance_seen == [1.0]


def test_classify_digits_and_the_digit_of_each_class():
    images = reference_digits(16, split="test").float() / 255
    predicted = classify_digits(images)
    assert predicted.shape == (len(images),) and int(predicted.min()) >= 0 and int(predicted.max()) <= 9
    assert digit_of_each_class(_RealDigitsModel(names={i: str(9 - i) for i in range(10)})).tolist() == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="class names are the digits 0..9"):
        digit_of_each_class(types.SimpleNamespace(num_classes=2, id2label={0: "cat", 1: "dog"}))
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        digit_of_each_class(types.SimpleNamespace(num_classes=0, id2label={}))
