"""Class-conditional training with classifier-free guidance dropout (issue 16, training side).

Fast checks in this process: reading labels, the options, the UNet config, the dropout mask, the grid layout and the
model card. Three tiny subprocess runs (8×8, T = 20, 4 steps) cover the rest together: `ddpm-ext train
--class_conditional` through the CLI with hybrid loss + learned_range + importance sampling + EMA + accumulation +
held-out bits/dim, its exact resume, and 2 processes matching 1 process × 2B.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from _models import tiny_unet
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from ddpm_ext.data import load_digits_dataset, load_image_dataset, read_class_labels, split_indices
from ddpm_ext.reporting import image_grid, model_card
from ddpm_ext.training import DDPMTrainer, TrainingConfig
from ddpm_ext.training.checkpoints import CHECKPOINT_MARKER, check_checkpoint_compatible
from ddpm_ext.training.config import build_arg_parser
from ddpm_ext.training.models import unet_config
from ddpm_ext.training.samples import class_grid_labels

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 1800
SMALL = [
    "--ddpm_num_steps", "20", "--ddpm_num_inference_steps", "5", "--lr_warmup_steps", "0", "--learning_rate", "1e-3",
    "--logger", "none", "--resolution", "8", "--lr_scheduler", "constant", "--logging_steps", "2",
]
# everything a conditional run must work with, in one set of flags
CONDITIONAL = [
    "--class_conditional", "--class_dropout_prob", "0.25", "--loss_type", "hybrid", "--variance_type", "learned_range",
    "--timestep_sampler", "importance", "--use_ema", "--gradient_accumulation_steps", "2", "--max_train_steps", "4",
    "--checkpointing_steps", "2", "--eval_nll_steps", "2", "--eval_nll_num_images", "8", "--eval_batch_size", "10",
    "--random_flip", "--log_batch_indices",
]
DIGIT_NAMES = [str(i) for i in range(10)]


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")


def _env(threads: int = 1) -> dict:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=pythonpath, ACCELERATE_USE_CPU="1",
               CUDA_VISIBLE_DEVICES="")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def _losses(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _config(tmp_path: Path, **overrides) -> TrainingConfig:
    values = dict(
        output_dir=str(tmp_path / "run"), ddpm_num_steps=20, ddpm_num_inference_steps=5, lr_warmup_steps=0,
        train_batch_size=8, logger="none", resolution=8, learning_rate=1e-3, class_conditional=True,
    )
    values.update(overrides)
    return TrainingConfig(**values)


# ---------------------------------------------------------------------- reading labels
def test_class_label_column_gives_its_ids_and_names():
    digits = load_digits_dataset()
    ids, names = read_class_labels(digits)
    assert names == DIGIT_NAMES
    from sklearn.datasets import load_digits

    assert ids.dtype == torch.int64 and torch.equal(ids, torch.from_numpy(load_digits().target).long())
    # a selection of rows keeps the selection's order
    ids2, _ = read_class_labels(digits.select([5, 0, 3]))
    assert ids2.tolist() == [ids[5], ids[0], ids[3]]


def test_integer_column_keeps_its_ids_and_names_them_up_to_the_largest():
    ds = datasets.Dataset.from_dict({"y": [3, 0, 3, 1]})
    ids, names = read_class_labels(ds, "y")
    assert ids.tolist() == [3, 0, 3, 1] and names == ["0", "1", "2", "3"]


def test_string_column_indexes_the_sorted_distinct_values():
    ds = datasets.Dataset.from_dict({"kind": ["dog", "cat", "dog", "bird"]})
    ids, names = read_class_labels(ds, "kind")
    assert names == ["bird", "cat", "dog"] and ids.tolist() == [2, 1, 2, 0]


def test_image_folder_with_one_sub_folder_per_class_gives_a_label_column(tmp_path):
    folder = tmp_path / "pets"
    for name, count in (("cat", 2), ("dog", 3)):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8), mode="L").save(folder / name / f"{i}.png")
    dataset = load_image_dataset(train_data_dir=str(folder))
    ids, names = read_class_labels(dataset)
    assert names == ["cat", "dog"]
    assert sorted(ids.tolist()) == [0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    "data, column, message",
    [
        ({"label": [0, 1]}, "klasse", r"label_column='klasse' is not a column.*columns: \['label'\]"),
        ({"y": [0.5, 1.0]}, "y", r"label column 'y' has feature Value\('float64'\); allowed: a ClassLabel, integer"),
        ({"y": [True, False]}, "y", r"label column 'y' has feature Value\('bool'\); allowed"),
        ({"y": [[0], [1]]}, "y", r"label column 'y' has feature .*allowed: a ClassLabel, integer or string"),
        ({"y": [0, None, 2]}, "y", r"label column 'y' has 1 missing value\(s\) \(first at row 1\)"),
        ({"y": ["a", None]}, "y", r"label column 'y' has 1 missing value\(s\) \(first at row 1\)"),
        ({"y": [2, -3]}, "y", r"label column 'y' holds the negative label -3 at row 1.*allowed: ids >= 0"),
    ],
)
def test_bad_label_columns_are_refused_naming_the_column(data, column, message):
    with pytest.raises(ValueError, match=message):
        read_class_labels(datasets.Dataset.from_dict(data), column)


def test_a_class_label_without_a_label_is_refused():
    features = datasets.Features({"label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"label": [0, -1]}, features=features)
    with pytest.raises(ValueError, match=r"negative label -1 at row 1 \(a ClassLabel uses -1 for a missing label\)"):
        read_class_labels(ds)


# ---------------------------------------------------------------------- options and the UNet config
def test_the_flags_are_generated_and_parsed():
    parser = build_arg_parser()
    args = parser.parse_args(["--class_conditional", "--label_column", "kind", "--class_dropout_prob", "0.2"])
    config = TrainingConfig.from_args(args).validate(check_owners=False)
    assert (config.class_conditional, config.label_column, config.class_dropout_prob) == (True, "kind", 0.2)
    defaults = TrainingConfig.from_args(parser.parse_args([]))
    assert (defaults.class_conditional, defaults.label_column, defaults.class_dropout_prob) == (False, None, 0.1)
    text = parser.format_help()
    assert "--class_conditional" in text and "--label_column" in text and "--class_dropout_prob" in text


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(label_column="kind"), r"label_column='kind' needs class_conditional=True \(--class_conditional\)"),
        (dict(class_dropout_prob=0.2), r"class_dropout_prob=0.2 needs class_conditional=True"),
        (dict(class_conditional=True, class_dropout_prob=1.0), r"class_dropout_prob=1.0 .*expected a value in \[0, 1\)"),
        (dict(class_conditional=True, class_dropout_prob=-0.1), r"class_dropout_prob=-0.1 .*in \[0, 1\)"),
        (dict(class_conditional=True, class_dropout_prob=float("nan")), r"class_dropout_prob=nan .*finite"),
        (dict(class_conditional=True, label_column=""), r"label_column='' is not allowed"),
    ],
)
def test_bad_conditional_options_are_refused(tmp_path, overrides, message):
    values = dict(output_dir=str(tmp_path / "run"))
    values.update(overrides)
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**values).validate(check_owners=False)


def test_unet_config_adds_the_null_class_last():
    config = unet_config("tiny", 8, 1, "learned_range", num_classes=10)
    assert config["num_class_embeds"] == 11 and config["out_channels"] == 2
    assert "num_class_embeds" not in unet_config("tiny", 8, 1)
    with pytest.raises(ValueError, match=r"num_classes=0 is not allowed; expected an integer >= 1"):
        unet_config("tiny", 8, 1, num_classes=0)


def test_a_user_config_whose_class_embedding_takes_no_ids_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(unet_config("tiny"), class_embed_type="timestep")))
    with pytest.raises(ValueError, match=r"class_embed_type='timestep' of the model config takes no class ids"):
        unet_config(model_config_name_or_path=str(path), num_classes=3)


def test_a_missing_label_column_fails_in_setup_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"label_column='kind' is not a column.*\['image', 'label'\]"):
        DDPMTrainer(_config(tmp_path, label_column="kind")).setup()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_classes_are_part_of_what_a_resume_must_match(tmp_path):
    expected = {"unet": {"a": 1}, "scheduler": {}, "use_ema": False, "timestep_sampler": "uniform",
                "class_names": ["cat", "dog"]}
    (tmp_path / CHECKPOINT_MARKER).write_text(json.dumps(dict(expected, class_names=["cat", "cow"])))
    with pytest.raises(ValueError, match=r"different model configuration[\s\S]*class_names: checkpoint \['cat', 'cow'\]"):
        check_checkpoint_compatible(str(tmp_path), expected)
    (tmp_path / CHECKPOINT_MARKER).write_text(json.dumps(expected))
    assert check_checkpoint_compatible(str(tmp_path), expected)["class_names"] == ["cat", "dog"]


def test_resuming_with_another_dropout_or_label_column_warns_that_it_is_not_exact():
    from ddpm_ext.training.checkpoints import exactness_differences

    saved = {"config": {"class_dropout_prob": 0.1, "label_column": None}}
    lines = exactness_differences(saved, {"class_dropout_prob": 0.2, "label_column": "kind"}, 1)
    assert lines == ["class_dropout_prob: checkpoint 0.1, this run 0.2", "label_column: checkpoint None, this run 'kind'"]
    assert exactness_differences(saved, dict(saved["config"]), 1) == []


# ---------------------------------------------------------------------- the trainer in this process
@pytest.fixture
def conditional_trainer(tmp_path):
    config = _config(tmp_path / "cond", class_dropout_prob=0.25, eval_nll_steps=5, eval_nll_num_images=8,
                     random_flip=True)
    return DDPMTrainer(config).setup()


def test_labels_follow_the_held_out_split(conditional_trainer):
    from sklearn.datasets import load_digits

    target = torch.from_numpy(load_digits().target).long()
    train_idx, test_idx = split_indices(len(target), 8, seed=0)
    t = conditional_trainer
    assert t.class_names == DIGIT_NAMES and t.unet.config.num_class_embeds == 11
    assert torch.equal(t.train_labels, target[train_idx]) and torch.equal(t.eval_labels, target[test_idx])
    assert len(t.train_labels) == len(t.train_source)
    assert t.fingerprint["class_names"] == DIGIT_NAMES and t.fingerprint["unet"]["num_class_embeds"] == 11
    assert t.id2label == {str(i): str(i) for i in range(10)}


def test_the_null_class_fraction_matches_class_dropout_prob(conditional_trainer):
    t = conditional_trainer
    masks = torch.stack([t._draw(m, (1, 8, 8))[4] for m in range(300)])  # 300 micro-steps × 8 labels
    n, p = masks.numel(), 0.25
    assert abs(int(masks.sum()) - n * p) < 5 * math.sqrt(n * p * (1 - p)), int(masks.sum())
    # the mask is a function of (seed, micro-step)
    assert torch.equal(t._draw(17, (1, 8, 8))[4], masks[17])
    indices = torch.arange(8)
    labels = t._labels(indices, masks[0])
    assert torch.equal(labels[masks[0]], torch.full((int(masks[0].sum()),), 10))
    assert torch.equal(labels[~masks[0]], t.train_labels[indices][~masks[0]])


def test_no_null_class_with_dropout_0_and_the_other_draws_unchanged(conditional_trainer, tmp_path):
    none = DDPMTrainer(_config(tmp_path / "p0", class_dropout_prob=0.0, random_flip=True)).setup()
    assert not any(bool(none._draw(m, (1, 8, 8))[4].any()) for m in range(300))
    plain = DDPMTrainer(_config(tmp_path / "uncond", class_conditional=False, random_flip=True)).setup()
    assert plain._draw(3, (1, 8, 8))[4] is None and "num_class_embeds" not in plain.unet_kwargs
    # the mask is drawn after everything else: timesteps, weights, noise and flips are what an unconditional run
    # draws at the same micro-step
    for m in (0, 3):
        a, b = plain._draw(m, (1, 8, 8)), conditional_trainer._draw(m, (1, 8, 8))
        assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4]))


def test_bf16_conditional_steps_train_the_class_embedding(tmp_path):
    trainer = DDPMTrainer(_config(tmp_path, mixed_precision="bf16", loss_type="hybrid", variance_type="learned",
                                  timestep_sampler="importance", gradient_accumulation_steps=2)).setup()
    before = trainer.unet.class_embedding.weight.detach().clone()
    trainer.train_steps(2)
    after = trainer.unet.class_embedding.weight
    assert trainer.mixed_precision == "bf16" and torch.isfinite(after).all()
    assert not torch.equal(before, after)
    assert all(math.isfinite(float(loss)) for loss, _ in trainer._pending)


# ---------------------------------------------------------------------- the grid and the model card
def test_the_grid_has_one_row_per_class():
    labels, columns = class_grid_labels(10, 16)
    assert columns == 2 and labels.tolist() == [k for k in range(10) for _ in range(2)]
    labels, columns = class_grid_labels(10, 10)
    assert columns == 1 and labels.tolist() == list(range(10))
    labels, columns = class_grid_labels(3, 16)  # at least eval_batch_size images
    assert columns == 6 and len(labels) == 18
    labels, columns = class_grid_labels(1000, 16)  # many classes: the first eval_batch_size of them
    assert columns == 1 and labels.tolist() == list(range(16))


def test_image_grid_takes_the_number_of_columns():
    images = np.stack([np.full((2, 3, 1), 10 * i, dtype=np.uint8) for i in range(6)])
    grid = image_grid(images, columns=2)
    assert grid.shape == (3 * 2, 2 * 3)
    for i in range(6):
        r, c = divmod(i, 2)
        assert (grid[2 * r : 2 * r + 2, 3 * c : 3 * c + 3] == 10 * i).all()
    with pytest.raises(ValueError, match=r"columns must be an integer >= 1 or None, got 0"):
        image_grid(images, columns=0)


def test_the_card_of_a_conditional_model_lists_its_classes_and_shows_sampling_by_name():
    unet = tiny_unet(num_class_embeds=4)
    id2label = {"0": "bird", "1": "cat", "2": "dog"}
    card = model_card("me/pets", unet, {"num_train_timesteps": 20}, sample_grid=True, id2label=id2label,
                      class_dropout_prob=0.15)
    assert "| 0 | bird |" in card.text and "| 2 | dog |" in card.text
    assert "one row per class" in card.text and "0.15" in card.text
    assert 'class_labels="dog", guidance_scale=1.5' in card.text
    assert card.data.ddpm_ext_id2label == id2label
    assert "class-conditional" in card.data.tags and "unconditional-image-generation" not in card.data.tags
    digits = model_card("me/digits", unet, {}, id2label={i: str(i) for i in range(10)})  # as pipe.id2label
    assert 'pipe(batch_size=16, class_labels="7", guidance_scale=1.5' in digits.text
    plain = model_card("me/plain", unet, {})
    assert "## Classes" not in plain.text and "class_labels" not in plain.text


def test_a_pushed_conditional_pipeline_gets_a_card_with_its_classes(hub_server, hf_token):
    from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler

    pipe = DDPMExtPipeline(unet=tiny_unet(num_class_embeds=3), scheduler=DDPMExtScheduler(num_train_timesteps=10),
                           id2label={"0": "cat", "1": "dog"})
    pipe.push_to_hub("tester/pets-card", token=hf_token)
    card = ModelCard.load("tester/pets-card", token=hf_token)
    assert "| 1 | dog |" in card.text and 'class_labels="dog"' in card.text
    assert card.data.ddpm_ext_id2label == {"0": "cat", "1": "dog"}


# ---------------------------------------------------------------------- real runs (subprocesses)
def _cli_train(out: Path, *args: str, threads: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ddpm_ext.cli", "train", "--no-launch", "--output_dir", str(out), *SMALL, *args]
    proc = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    _cli_train(out, "--train_batch_size", "8", *CONDITIONAL)
    return out


def test_cli_conditional_run_saves_a_pipeline_with_its_classes(conditional_run):
    out = conditional_run
    index = json.loads((out / "model_index.json").read_text())
    assert index["id2label"] == {str(i): str(i) for i in range(10)}
    unet_cfg = json.loads((out / "unet" / "config.json").read_text())
    assert unet_cfg["num_class_embeds"] == 11 and unet_cfg["out_channels"] == 2
    marker = json.loads((out / "checkpoint-4" / CHECKPOINT_MARKER).read_text())
    assert marker["class_names"] == DIGIT_NAMES
    # one row per class: eval_batch_size 10 gives 10 rows × 1 column of 8×8 images
    assert np.asarray(Image.open(out / "sample_grid.png")).shape[:2] == (80, 8)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    bpd = [r["bits_per_dim"] for r in rows if "bits_per_dim" in r]
    assert len(bpd) == 2 and all(0 < v < 20 for v in bpd)
    card = ModelCard.load(str(out / "README.md"))
    assert "| 7 | 7 |" in card.text and 'class_labels="7", guidance_scale=1.5' in card.text
    assert card.data.ddpm_ext_training_config["class_dropout_prob"] == 0.25

    from ddpm_ext import DDPMExtPipeline

    pipe = DDPMExtPipeline.from_pretrained(str(out))
    assert pipe.num_classes == 10 and pipe.null_class_id == 10 and pipe.labels["7"] == 7
    images = pipe(batch_size=2, class_labels="7", guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
                  num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_conditional_resume_is_bit_identical(conditional_run, tmp_path):
    full = conditional_run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    _cli_train(resumed, "--train_batch_size", "8", *CONDITIONAL, "--resume_from_checkpoint", "latest")
    for name in ("checkpoint-4/model.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        a, b = load_file(full / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert _losses(resumed) == {s: v for s, v in _losses(full).items() if s > 2}


def test_two_processes_match_one_process_with_the_double_batch(conditional_run, tmp_path):
    one = conditional_run
    two = tmp_path / "two"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "ddpm_ext.training", "--output_dir", str(two), *SMALL, "--train_batch_size", "4", *CONDITIONAL,
    ]
    proc = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]

    def indices(folder, rank):
        path = folder / "debug" / f"batch_indices_rank{rank}.jsonl"
        return {r["micro_step"]: r["indices"] for r in map(json.loads, path.read_text().splitlines())}

    rank0, rank1, single = indices(two, 0), indices(two, 1), indices(one, 0)
    assert sorted(single) == sorted(rank0) == list(range(8))
    assert all(rank0[m] + rank1[m] == single[m] for m in single)
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3, 4]
    for step in l1:  # the same labels and null-class mask on the same rows, else the losses would differ
        assert l2[step] == pytest.approx(l1[step], rel=1e-4, abs=1e-6)
    p0, p1 = torch.load(two / "debug" / "params_rank0.pt"), torch.load(two / "debug" / "params_rank1.pt")
    assert all(torch.equal(p0[n], p1[n]) for n in p0)
    p_single = torch.load(one / "debug" / "params_rank0.pt")
    assert max(float((p_single[n] - p0[n]).abs().max()) for n in p0) < 3e-4
    assert json.loads((two / "model_index.json").read_text())["id2label"]["9"] == "9"
