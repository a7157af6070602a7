"""Class-conditional sampling and likelihood with classifier-free guidance (issue 16): the guidance formula, the
batched forward against two separate ones, the class-label forms, every bad input (raised before the UNet runs),
the conditional bound, and a small trained model whose guided samples land in the asked-for class."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _models import tiny_unet
from test_loading import BLOCK_PLUGIN

from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler
from ddpm_ext.pipelines.pipeline_ddpm_ext import DEFAULT_GUIDANCE_SCALE, classifier_free_guidance

NAMES = {0: "zero", 1: "one", 2: "two"}


def _pipe(variance_type="fixed_small", id2label=NAMES, seed=0):
    learned = variance_type in ("learned", "learned_range")
    unet = tiny_unet(1, 2 if learned else 1, seed=seed, num_class_embeds=len(NAMES) + 1)
    scheduler = DDPMExtScheduler(num_train_timesteps=50, beta_end=0.1, variance_type=variance_type)
    pipe = DDPMExtPipeline(unet, scheduler, id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _images(pipe, **kwargs):
    kwargs.setdefault("num_inference_steps", 5)
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe(output_type="pt", **kwargs).images


class _CountingUNet(torch.nn.Module):
    """Wraps a UNet and records each forward's batch size and class labels."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.config = unet.config
        self.calls = []

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def device(self):
        return self.unet.device

    def forward(self, sample, timestep, class_labels=None):
        self.calls.append((sample.shape[0], None if class_labels is None else class_labels.tolist()))
        return self.unet(sample, timestep, class_labels=class_labels)


# ---------------------------------------------------------------------- the guidance formula
@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5, 7.0])
def test_guidance_formula_against_float64(scale):
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 3, 2, 4, 4, generator=g)
    got = classifier_free_guidance(cond, uncond, scale, channels=2)
    c, u = cond.double(), uncond.double()
    expected_mean = u[:, :2] + scale * (c[:, :2] - u[:, :2])
    torch.testing.assert_close(got[:, :2].double(), expected_mean, atol=1e-6, rtol=1e-6)
    # a learned variance's channels are the conditional pass's, untouched (GLIDE)
    assert torch.equal(got[:, 2:], cond[:, 2:])
    # without variance channels, only the mean
    assert classifier_free_guidance(cond[:, :2], uncond[:, :2], scale, channels=2).shape == (3, 2, 4, 4)


def test_scale_zero_is_the_null_prediction_and_one_the_conditional():
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(2, 2, 1, 4, 4, generator=g)
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0, 1), uncond)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 1.0, 1), cond, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------- the guided forward
@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_batched_guidance_equals_two_separate_forwards(variance_type):
    pipe = _pipe(variance_type)
    pipe.unet.eval()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(17)
    labels = torch.tensor([0, 2, 1])
    null = torch.full_like(labels, pipe.null_class_id)
    with torch.no_grad():
        cond = pipe.unet(x, t, class_labels=labels).sample
        uncond = pipe.unet(x, t, class_labels=null).sample
        pipe._class_labels = labels
        for scale in (1.0, 2.5, 0.3):
            pipe._guidance_scale = scale
            got = pipe._predict(x, t, channels=1)
            expected = uncond.clone()
            expected[:, :1] = uncond[:, :1] + scale * (cond[:, :1] - uncond[:, :1])
            if variance_type == "learned_range":
                expected[:, 1:] = cond[:, 1:]  # the conditional pass's variance (GLIDE)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # the extremes take one forward of the right kind, exactly; s = 0 is the null model alone, its variance too
        pipe._guidance_scale = 0.0
        assert torch.equal(pipe._predict(x, t, channels=1), uncond)
        pipe._guidance_scale = 1.0
        assert torch.equal(pipe._predict(x, t, channels=1), cond)


def test_one_batched_forward_per_guided_step():
    pipe = _pipe()
    counting = _CountingUNet(pipe.unet)
    real_unet = pipe.unet
    pipe.unet = counting
    try:
        pipe._class_labels, pipe._guidance_scale = torch.tensor([1, 2]), 3.0
        pipe._predict(torch.zeros(2, 1, 8, 8), torch.tensor(5), channels=1)
    finally:
        pipe.unet = real_unet
    assert counting.calls == [(4, [1, 2, 3, 3])]  # conditional and null inputs in one call


def test_scale_zero_samples_equal_the_null_class_samples():
    pipe = _pipe("learned_range")
    null = _images(pipe, batch_size=2)  # no class_labels: the null class
    guided_zero = _images(pipe, batch_size=2, class_labels=1, guidance_scale=0)
    assert torch.equal(null, guided_zero)
    assert not torch.equal(guided_zero, _images(pipe, batch_size=2, class_labels=1, guidance_scale=1))


def test_scale_one_samples_are_the_plain_conditional_chain():
    pipe = _pipe()
    outputs = []

    def record(p, i, t, kwargs):
        outputs.append(kwargs["model_output"].clone())
        return kwargs

    images = _images(pipe, batch_size=2, class_labels=[0, 2], guidance_scale=1.0, callback_on_step_end=record,
                     callback_on_step_end_tensor_inputs=["model_output"])
    # rerun the chain by hand with the conditional UNet alone
    scheduler = pipe.scheduler
    scheduler.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    from diffusers.utils.torch_utils import randn_tensor

    x = randn_tensor((2, 1, 8, 8), generator=g)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            out = pipe.unet(x, t, class_labels=torch.tensor([0, 2])).sample
            torch.testing.assert_close(outputs[i], out, atol=1e-6, rtol=0)
            x = scheduler.step(out, int(t), x, generator=g).prev_sample
    torch.testing.assert_close(images, (x / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)


def test_default_guidance_scale_and_properties():
    pipe = _pipe()
    assert pipe.num_classes == 3 and pipe.null_class_id == 3
    assert pipe.id2label == NAMES
    assert pipe.labels == {"one": 1, "two": 2, "zero": 0}
    assert pipe.get_label_ids(["two", "zero"]) == [2, 0]
    _images(pipe, class_labels="one")
    assert pipe.guidance_scale == DEFAULT_GUIDANCE_SCALE and pipe.do_classifier_free_guidance
    _images(pipe, class_labels="one", guidance_scale=1)
    assert pipe.guidance_scale == 1.0 and not pipe.do_classifier_free_guidance
    # default names: the ids
    assert _pipe(id2label=None).labels == {"0": 0, "1": 1, "2": 2}


# ---------------------------------------------------------------------- the forms of class_labels
def test_class_label_forms_give_the_same_images():
    pipe = _pipe()
    reference = _images(pipe, batch_size=3, class_labels=[2, 2, 2], guidance_scale=2.0)
    for form in (2, "two", ["two"], [2], torch.tensor(2), torch.tensor([2]), np.int64(2), np.array([2, 2, 2]),
                 ["two", "two", "two"], (2, "two", 2)):
        assert torch.equal(_images(pipe, batch_size=3, class_labels=form, guidance_scale=2.0), reference), form


def test_several_labels_set_the_batch_and_each_image_has_its_own_stream():
    pipe = _pipe()
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    batch = _images(pipe, class_labels=["zero", "one", "two"], generator=generators)  # batch_size left at 1
    assert batch.shape[0] == 3
    # image 1 alone, with its own generator and label, is image 1 of the batch (guided, batched forward)
    alone = _images(pipe, class_labels="one", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("output_type", ["np", "pil", "latent"])
def test_every_output_type_and_eta(output_type):
    pipe = _pipe("learned_range")
    images = pipe(batch_size=2, class_labels="one", guidance_scale=2.0, num_inference_steps=4, eta=0.0,
                  output_type=output_type, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2


# ---------------------------------------------------------------------- bad inputs, before any sampling
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_labels": 3}, "class label 3 is out of range; this model's class ids are 0..2"),
        ({"class_labels": -1}, "class label -1 is out of range"),
        ({"class_labels": [0, 5]}, "class label 5 is out of range"),
        ({"class_labels": "seven"}, "unknown class name(s) ['seven']; this model's classes: ['one', 'two', 'zero']"),
        ({"class_labels": 1.0}, "class label 1.0 is not allowed"),
        ({"class_labels": True}, "class label True is not allowed"),
        ({"class_labels": []}, "class_labels is an empty list"),
        ({"class_labels": torch.tensor([0.0])}, "class_labels must be an integer tensor"),
        ({"class_labels": torch.zeros(2, 2, dtype=torch.long)}, "class_labels must be a 0-d or 1-d tensor"),
        ({"class_labels": [0, 1, 2], "batch_size": 2}, "got 3 class labels for batch_size=2"),
        ({"class_labels": 1, "guidance_scale": -0.5}, "guidance_scale must be a finite number >= 0, got -0.5"),
        ({"class_labels": 1, "guidance_scale": float("nan")}, "guidance_scale must be a finite number >= 0"),
        ({"class_labels": 1, "guidance_scale": "3"}, "guidance_scale must be a finite number >= 0, got '3'"),
        ({"guidance_scale": 3.0}, "guidance_scale=3.0 needs class_labels"),
        ({"class_labels": 1, "batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_inputs_fail_before_any_sampling(kwargs, message):
    pipe = _pipe()
    counting = _CountingUNet(pipe.unet)
    pipe.unet = counting
    with pytest.raises(ValueError) as err:
        pipe(num_inference_steps=2, **kwargs)
    assert message in str(err.value)
    assert counting.calls == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_labels": 1}, "class_labels=1 was given but this UNet is unconditional"),
        ({"class_labels": "7"}, "this UNet is unconditional"),
        ({"guidance_scale": 3.0}, "guidance_scale=3.0 was given but this UNet is unconditional"),
    ],
)
def test_an_unconditional_model_refuses_classes_and_guidance(kwargs, message):
    pipe = DDPMExtPipeline(tiny_unet(1), DDPMExtScheduler(num_train_timesteps=50))
    counting = _CountingUNet(pipe.unet)
    pipe.unet = counting
    with pytest.raises(ValueError) as err:
        pipe(num_inference_steps=2, **kwargs)
    assert message in str(err.value)
    assert counting.calls == []
    with pytest.raises(ValueError, match="this UNet is unconditional"):
        pipe.bits_per_dim(torch.full((1, 1, 8, 8), -1.0), class_labels=0)


@pytest.mark.parametrize(
    "unet_kwargs, id2label, message",
    [
        ({}, {0: "a"}, "id2label with 1 classes was given but the UNet is unconditional"),
        ({"num_class_embeds": 1}, None, "num_class_embeds=1 leaves no class"),
        ({"num_class_embeds": 3}, {0: "a", 1: "b", 2: "c"}, "must name the classes 0..1 exactly once"),
        ({"num_class_embeds": 3}, {0: "a", 2: "b"}, "must name the classes 0..1 exactly once"),
        ({"num_class_embeds": 3}, {"x": "a", 1: "b"}, "id2label keys must be class ids 0..1"),
        ({"num_class_embeds": 3}, {0: "a", 1: "a"}, "id2label names must be unique"),
        ({"num_class_embeds": 3}, {0: "a", 1: ""}, "id2label names must be non-empty strings"),
        ({"num_class_embeds": 3}, ["a", "b"], "id2label must be a dict"),
    ],
)
def test_bad_id2label(unet_kwargs, id2label, message):
    unet = tiny_unet(1, **unet_kwargs)
    with pytest.raises(ValueError) as err:
        DDPMExtPipeline(unet, DDPMExtScheduler(num_train_timesteps=50), id2label=id2label)
    assert message in str(err.value)


# ---------------------------------------------------------------------- the conditional bound
def test_conditional_bits_per_dim_is_each_images_own_bound():
    pipe = _pipe("learned_range")
    images = (torch.randint(0, 256, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1)

    def bpd(x, labels, seed):
        return pipe.bits_per_dim(x, class_labels=labels, generator=[torch.Generator().manual_seed(s) for s in seed],
                                 timestep_batch_size=25)

    together = bpd(images, ["zero", "two", "one"], [0, 1, 2])
    for i, label in enumerate([0, 2, 1]):
        alone = bpd(images[i : i + 1], label, [i])
        torch.testing.assert_close(alone[0], together[i], atol=1e-4, rtol=0)
    # the label reaches the network: another class, another bound (same noise)
    other = bpd(images, [1, 1, 1], [0, 1, 2])
    assert not torch.allclose(other, together)
    # no labels: the null class's (unconditional) bound
    counting = _CountingUNet(pipe.unet)
    pipe.unet = counting
    null = bpd(images, None, [0, 1, 2])
    assert bool(torch.isfinite(null).all()) and not torch.allclose(null, together)
    assert {label for _, labels in counting.calls for label in labels} == {pipe.null_class_id}
    # the labels follow their images through the timestep batching (image-major)
    counting.calls.clear()
    bpd(images, [0, 2, 1], [0, 1, 2])
    assert counting.calls[0][1] == [0] * 25 + [2] * 25 + [1] * 25
    pipe.unet = counting.unet
    with pytest.raises(ValueError, match="got 2 class labels for 3 images"):
        pipe.bits_per_dim(images, class_labels=[0, 1])
    with pytest.raises(ValueError, match="class label 3 is out of range"):
        pipe.bits_per_dim(images, class_labels=3)


# ---------------------------------------------------------------------- saved, loaded, sampled by name
def _run(code: str, cwd) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


SAMPLE_BY_NAME = """
import numpy as np, torch
assert pipe.labels == {"one": 1, "two": 2, "zero": 0}, pipe.labels
pipe.set_progress_bar_config(disable=True)
images = pipe(class_labels=["two", "zero"], guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
              num_inference_steps=5, output_type="np").images
np.testing.assert_allclose(images, np.load(REFERENCE), atol=1e-6)
print("sampled", images.shape[0])
"""


@pytest.mark.parametrize("route", ["plugin", "remote_code_with_plugin", "remote_code_without_plugin"])
def test_label_names_survive_save_and_load_in_a_fresh_process(tmp_path, route):
    pipe = _pipe("learned_range")
    folder = tmp_path / "model"
    pipe.save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["id2label"] == {"0": "zero", "1": "one", "2": "two"}
    reference = _images(pipe, class_labels=["two", "zero"], guidance_scale=2.0).permute(0, 2, 3, 1).numpy()
    np.save(tmp_path / "reference.npy", reference)
    load = {
        "plugin": "from ddpm_ext import DDPMExtPipeline\npipe = DDPMExtPipeline.from_pretrained(FOLDER)\n",
        "remote_code_with_plugin": "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True)\n",
        "remote_code_without_plugin": BLOCK_PLUGIN + "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True)\n",
    }[route]
    code = f"FOLDER = {str(folder)!r}\nREFERENCE = {str(tmp_path / 'reference.npy')!r}\n" + load + SAMPLE_BY_NAME
    assert "sampled 2" in _run(code, tmp_path)


# ---------------------------------------------------------------------- guidance steers toward the class
def test_guided_samples_land_in_the_asked_for_class():
    """A tiny model trained with label dropout on two classes (left half bright / right half bright); a
    classifier (which half is brighter) checks that samples of each class come out as that class, and more so with
    guidance; the null class (scale 0) ignores the label."""
    torch.manual_seed(0)
    unet = tiny_unet(1, num_class_embeds=3)
    scheduler = DDPMExtScheduler(num_train_timesteps=100)
    g = torch.Generator().manual_seed(0)
    half = torch.cat([torch.ones(8, 4), -torch.ones(8, 4)], 1)
    prototypes = torch.stack([half, half.flip(-1)])[:, None]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=3e-3)
    for _ in range(150):
        y = torch.randint(0, 2, (64,), generator=g)
        t = torch.randint(0, 100, (64,), generator=g)
        noise = torch.randn((64, 1, 8, 8), generator=g)
        dropped = torch.where(torch.rand(64, generator=g) < 0.2, torch.full_like(y, 2), y)
        loss = ((unet(scheduler.add_noise(prototypes[y], noise, t), t, class_labels=dropped).sample - noise) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pipe = DDPMExtPipeline(unet, scheduler, id2label={0: "left", 1: "right"})
    pipe.set_progress_bar_config(disable=True)

    def accuracy(name, scale):
        x = _images(pipe, batch_size=32, class_labels=name, guidance_scale=scale, num_inference_steps=20,
                    generator=torch.Generator().manual_seed(1))
        left_brighter = x[..., :4].mean((1, 2, 3)) > x[..., 4:].mean((1, 2, 3))
        return float((left_brighter if name == "left" else ~left_brighter).float().mean())

    guided = {name: accuracy(name, 3.0) for name in ("left", "right")}
    plain = {name: accuracy(name, 1.0) for name in ("left", "right")}
    assert min(guided.values()) >= 0.8, guided
    assert sum(guided.values()) > sum(plain.values()), (guided, plain)
    assert sum(plain.values()) > 1.0, plain  # better than chance without guidance too
    # scale 0 is the null class: the same images whatever the label
    assert accuracy("left", 0.0) + accuracy("right", 0.0) == pytest.approx(1.0)
