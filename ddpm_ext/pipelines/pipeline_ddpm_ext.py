# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""DDPMExtPipeline: sampling and the bits/dim likelihood of a DDPM / Improved-DDPM UNet.

A saved folder that holds this file loads in two ways (diffusers' refusal without `trust_remote_code` points here):

    DDPMExtPipeline.from_pretrained(folder)                            # with `pip install ddpm-ext`: no remote code
    DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)  # plain diffusers: runs this file

Self-contained on purpose (torch, numpy and diffusers only): `save_pretrained` copies this file into the saved
folder, where `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` loads it without ddpm-ext installed.
It reaches the scheduler only through `self.scheduler`, never by importing it.
"""

import inspect
import json
import math
import numbers
import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from diffusers import DDPMPipeline, UNet2DModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import CommitInfo, upload_folder

PIPELINE_MODULE = "pipeline_ddpm_ext"
SCHEDULER_MODULE = "scheduling_ddpm_ext"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")
# the guidance scale a class-conditional model samples with when `guidance_scale` is not given
DEFAULT_GUIDANCE_SCALE = 1.5  # measured on the digits: 99.7 % class accuracy, FD below the unconditional model (benchmarks/RESULTS.md)
# what a published model consists of, for every push path (`save_pretrained(push_to_hub=True)`, `push_to_hub`,
# `ddpm_ext.hub.push_output_dir`): the pipeline, the model card and the sample grid; checkpoints, optimizer and RNG
# states, logs, metrics and anything else in a training folder stay local
PUBLISH_ALLOW_PATTERNS = [
    "model_index.json",
    PIPELINE_MODULE + ".py",
    "unet/*",
    "scheduler/*",
    "README.md",
    "sample_grid.png",
]
PUBLISH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/*", ".tmp-*", "logs/*", "debug/*", "*.jsonl"]
_SAVE_KEYS = ("use_flashpack",)  # save_pretrained's keywords that are not the push's


@dataclass
class BitsPerDimOutput(BaseOutput):
    """
    Per-image negative log-likelihood bound, in bits per dimension (DDPM eq. 5).

    Args:
        bits_per_dim (`torch.Tensor` [B]): the whole bound: prior + every KL term + decoder.
        prior_bpd (`torch.Tensor` [B]): L_T = KL(q(x_T | x_0) ‖ N(0, I)).
        vb_terms_bpd (`torch.Tensor` [B, T]): L_{t-1} per timestep index t (column 0 is the decoder's L_0).
        decoder_bpd (`torch.Tensor` [B]): L_0, the discretized decoder's negative log-likelihood.
    """

    bits_per_dim: torch.Tensor
    prior_bpd: torch.Tensor
    vb_terms_bpd: torch.Tensor
    decoder_bpd: torch.Tensor


class DDPMExtPipeline(DDPMPipeline):
    """
    Image generation with a DDPM / Improved-DDPM `UNet2DModel`, unconditional or class-conditional with
    classifier-free guidance, plus the model's likelihood.

    A class-conditional model is a `UNet2DModel` with `num_class_embeds = K + 1`: ids `0..K-1` are its classes and
    id `K` is the learned null class (the label dropped during training, Ho & Salimans 2022), which guidance and
    unconditional sampling use.

    Args:
        unet ([`UNet2DModel`]): the denoiser; with a learned variance type it has twice the image's channels.
        scheduler ([`SchedulerMixin`]): a `DDPMExtScheduler` (any diffusers scheduler samples too; the likelihood
            needs `DDPMExtScheduler`).
        id2label (`dict`, *optional*): the class names of a class-conditional UNet, `{id: name}` for ids `0..K-1`
            (as `DiTPipeline` names them); saved in `model_index.json`. Defaults to the ids as names ("0", "1", ...).
    """

    # "latents" is diffusers' name for the running sample; "image" is ddpm-ext's older name for it, kept as an alias
    _callback_tensor_inputs = ["latents", "image", "model_output"]
    # set by the installed package to its DDPMExtScheduler, so loading runs no remote code; None in saved copies
    _default_scheduler_class = None

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin, id2label: Optional[Dict[Any, str]] = None):
        _check_channels(unet, scheduler)
        super().__init__(unet=unet, scheduler=scheduler)
        id2label = _check_id2label(unet, id2label)
        if id2label is not None:  # only class-conditional models carry it: unconditional folders stay as they were
            self.register_to_config(id2label=id2label)

    # ------------------------------------------------------------------ classes
    @property
    def num_classes(self) -> int:
        """K, the number of classes of a class-conditional UNet (0 for an unconditional one)."""
        embeds = getattr(self.unet.config, "num_class_embeds", None)
        return 0 if embeds is None else embeds - 1

    @property
    def null_class_id(self) -> Optional[int]:
        """The id of the learned null class (K), or None for an unconditional UNet."""
        return self.num_classes if self.num_classes else None

    @property
    def id2label(self) -> Dict[int, str]:
        """`{id: name}` for the classes (empty for an unconditional model)."""
        return {int(k): v for k, v in (self.config.get("id2label") or {}).items()}

    @property
    def labels(self) -> Dict[str, int]:
        """`{name: id}` for the classes, sorted by name (as `DiTPipeline.labels`)."""
        return dict(sorted((v, k) for k, v in self.id2label.items()))

    def get_label_ids(self, label: Union[str, List[str]]) -> List[int]:
        """The class ids of one class name or a list of them; an unknown name is a `ValueError` listing the names."""
        names = [label] if isinstance(label, str) else list(label)
        if not self.num_classes:
            raise ValueError(f"class names {names!r} were given but this model is unconditional (no classes)")
        labels = self.labels
        unknown = [n for n in names if n not in labels]
        if unknown:
            raise ValueError(f"unknown class name(s) {unknown!r}; this model's classes: {list(labels)}")
        return [labels[n] for n in names]

    @property
    def guidance_scale(self) -> Optional[float]:
        """The classifier-free guidance scale of the last (or running) call; a step-end callback may change
        `pipe._guidance_scale`, and the following steps use the new value."""
        return getattr(self, "_guidance_scale", None)

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the running call combines a conditional and a null-class prediction (scale other than 0 and 1)."""
        scale = self.guidance_scale
        return getattr(self, "_class_labels", None) is not None and scale is not None and scale not in (0, 1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        num_inference_steps: Optional[int] = None,
        output_type: Optional[str] = "pil",
        return_dict: bool = True,
        eta: Optional[float] = None,
        callback_on_step_end: Optional[Union[Callable, PipelineCallback, MultiPipelineCallbacks]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["latents"],
        class_labels: Optional[Union[int, str, List[Union[int, str]], torch.Tensor]] = None,
        guidance_scale: Optional[float] = None,
    ) -> Union[ImagePipelineOutput, Tuple]:
        """
        Generate images by running the reverse process from x_T ~ N(0, I).

        Args:
            batch_size (`int`, defaults to 1): number of images; with several `class_labels` and `batch_size=1`, one
                image per label.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): a list of `batch_size` generators
                gives each image its own stream, so image i is the same whatever the batch size.
            num_inference_steps (`int`, *optional*): reverse steps, respaced over the training chain; defaults to
                the whole chain (`num_train_timesteps`, 1000 for DDPM models, as in `DDPMPipeline`).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` (a [B, C, H, W] tensor in [0, 1]) or
                `"latent"` (the raw final sample x_0 in the model's range, as diffusers' pipelines return it).
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` instead of a tuple.
            eta (`float`, *optional*): `None` takes ancestral DDPM steps; a number takes DDIM steps with that η
                (0 deterministic, 1 ancestral).
            callback_on_step_end (`Callable`, *optional*): called as `fn(pipe, i, t, callback_kwargs)` after each
                step; may return a dict that replaces the running sample (`{"latents": ...}`).
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`): the tensors passed in
                `callback_kwargs`; allowed: `latents` (the running sample x_t), `image` (the same tensor under
                ddpm-ext's earlier name), `model_output` (the guided prediction).
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*; class-conditional models): the class of
                each image, as ids or names (`pipe.labels`); one for the whole batch or one per image. `None` samples
                the null class, i.e. unconditionally.
            guidance_scale (`float`, *optional*): classifier-free guidance in diffusers' convention,
                ε̂ = ε_null + s·(ε_cond − ε_null): 1 samples the plain conditional model, 0 the null class (the
                unconditional model, its variance included), s > 1 trades diversity for fidelity. The conditional
                and null predictions come from one batched forward; with a learned variance, guidance applies to the
                prediction's channels and the variance is the conditional one (GLIDE). Defaults to `DEFAULT_GUIDANCE_SCALE` (1.5) when `class_labels` are given.

        Returns:
            [`ImagePipelineOutput`] or `tuple`.
        """
        if num_inference_steps is None:
            num_inference_steps = self.scheduler.config.num_train_timesteps
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        labels, batch_size = self._resolve_class_labels(class_labels, batch_size)
        self._guidance_scale = self._resolve_guidance_scale(guidance_scale, labels)
        self._check_call_inputs(
            batch_size, generator, num_inference_steps, output_type, eta, callback_on_step_end_tensor_inputs
        )
        channels = self.unet.config.in_channels
        size = self.unet.config.sample_size
        shape = (batch_size, channels, size, size) if isinstance(size, int) else (batch_size, channels, *size)
        device = self._execution_device
        dtype = self.unet.dtype

        scheduler = self.scheduler
        if not hasattr(scheduler, "alphas_cumprod"):
            # EDM-style schedulers (EDMEulerScheduler, ...) bring their own σ range and output preconditioning and
            # never read this model's β schedule: refuse rather than sample noise-shaped garbage
            raise ValueError(
                f"{type(scheduler).__name__} does not use this model's noise schedule (it has no alphas_cumprod), so"
                " it cannot sample from it; schedulers that work: DDPMExtScheduler, DDPMScheduler, DDIMScheduler,"
                " PNDMScheduler, LMSDiscreteScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,"
                " HeunDiscreteScheduler, KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler,"
                " DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler, DEISMultistepScheduler,"
                " UniPCMultistepScheduler (e.g. pipe.scheduler = DPMSolverMultistepScheduler.from_config(...))"
            )
        if "device" in inspect.signature(scheduler.set_timesteps).parameters:
            scheduler.set_timesteps(num_inference_steps, device=device)
        else:
            scheduler.set_timesteps(num_inference_steps)
        # DDPM-family schedulers step on integer timesteps, passed as plain ints (no per-step host sync); the
        # σ-based ones (Euler, Heun, LMS, KDPM2) step on their own float timesteps, which they look up by value
        integer_steps = not scheduler.timesteps.is_floating_point()
        timesteps = [int(t) for t in scheduler.timesteps] if integer_steps else list(scheduler.timesteps)
        self._num_timesteps = len(timesteps)
        # one host-to-device copy for the whole loop
        timesteps_device = (
            torch.tensor(timesteps, device=device, dtype=torch.long) if integer_steps else scheduler.timesteps.to(device)
        )
        # the variance channels go to schedulers that sample with them (DDPMExtScheduler, DDPMScheduler); the
        # DPM-Solver family takes variance_type only to cut them off itself (as RGB: [:, :3]), so they get the mean
        pass_full_output = _scheduler_learns_variance(scheduler) and not hasattr(scheduler, "convert_model_output")
        step_parameters = inspect.signature(scheduler.step).parameters
        step_kwargs = {"generator": generator} if "generator" in step_parameters else {}
        if eta is not None:
            step_kwargs["eta"] = eta

        if labels is None and self.num_classes:
            labels = torch.full((batch_size,), self.null_class_id, dtype=torch.long)
            self._guidance_scale = None  # the null class alone: nothing to guide
        self._class_labels = None if labels is None else labels.to(device)

        image = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if scheduler.init_noise_sigma != 1:  # σ-based schedulers start from N(0, σ_max² I)
            image = image * scheduler.init_noise_sigma
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = scheduler.scale_model_input(image, t)
            model_output = self._predict(model_input, timesteps_device[i], channels)
            if model_output.shape[1] != channels and not pass_full_output:
                model_output = model_output[:, :channels]  # a scheduler without learned variance: drop it
            image = scheduler.step(model_output, t, image, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                local = {"latents": image, "image": image, "model_output": model_output}
                callback_kwargs = {k: local[k] for k in callback_on_step_end_tensor_inputs}
                returned = callback_on_step_end(self, i, t, callback_kwargs) or {}
                replaced = returned.get("latents", image)
                image = replaced if replaced is not image else returned.get("image", image)

        if output_type == "latent":
            self.maybe_free_model_hooks()
            return (image,) if not return_dict else ImagePipelineOutput(images=image)
        image = (image.float() / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def _predict(self, sample: torch.Tensor, timestep: torch.Tensor, channels: int) -> torch.Tensor:
        """The UNet's output for the running sample: unconditional, conditional, or guided (one batched forward of
        the conditional and null-class inputs)."""
        labels = self._class_labels
        if labels is None:
            return self.unet(sample, timestep).sample
        scale = self._guidance_scale
        if scale is None or scale == 1:
            return self.unet(sample, timestep, class_labels=labels).sample
        cached = getattr(self, "_guided_labels", None)  # (labels, [labels; null]): built once per set of labels
        if cached is None or cached[0] is not labels:
            cached = self._guided_labels = (labels, torch.cat([labels, torch.full_like(labels, self.null_class_id)]))
        both_labels = cached[1]
        if scale == 0:
            return self.unet(sample, timestep, class_labels=both_labels[len(labels):]).sample
        both = self.unet(torch.cat([sample, sample]), timestep, class_labels=both_labels).sample
        conditional, unconditional = both.chunk(2)
        return classifier_free_guidance(conditional, unconditional, scale, channels)

    def _resolve_class_labels(self, class_labels, batch_size, images: bool = False) -> Tuple[Optional[torch.Tensor], int]:
        """`class_labels` as a LongTensor [batch_size] of class ids (None stays None) and the batch size; with
        `images`, `batch_size` is the number of given images and is not changed by the labels."""
        if class_labels is None:
            return None, batch_size
        if not self.num_classes:
            raise ValueError(
                f"class_labels={_short(class_labels)} was given but this UNet is unconditional (num_class_embeds is"
                " None); train with --class_conditional for a model that takes class labels"
            )
        K = self.num_classes
        if isinstance(class_labels, np.ndarray):
            class_labels = torch.from_numpy(class_labels)
        if isinstance(class_labels, torch.Tensor):
            if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
                raise ValueError(f"class_labels must be an integer tensor of class ids, got dtype {class_labels.dtype}")
            if class_labels.ndim > 1:
                raise ValueError(f"class_labels must be a 0-d or 1-d tensor, got shape {tuple(class_labels.shape)}")
            ids = class_labels.reshape(-1).long().cpu()
        else:
            items = list(class_labels) if isinstance(class_labels, (list, tuple)) else [class_labels]
            if not items:
                raise ValueError("class_labels is an empty list; give one label for the batch or one per image")
            ids = []
            for item in items:
                if isinstance(item, str):
                    ids.extend(self.get_label_ids(item))
                elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
                    ids.append(int(item))
                else:
                    raise ValueError(
                        f"class label {item!r} is not allowed; allowed: a class id 0..{K - 1} or a name of"
                        f" {list(self.labels)}"
                    )
            ids = torch.tensor(ids, dtype=torch.long)
        bad = ids[(ids < 0) | (ids >= K)]
        if bad.numel():
            raise ValueError(
                f"class label {int(bad[0])} is out of range; this model's class ids are 0..{K - 1} ({K} classes:"
                f" {list(self.labels)})"
            )
        n = ids.numel()
        if n == 0:
            raise ValueError("class_labels is empty; give one label for the batch or one per image")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            return ids, batch_size  # _check_call_inputs names the bad batch_size
        if n > 1 and batch_size == 1 and not images:
            batch_size = n
        if n == 1:
            ids = ids.expand(batch_size).clone()
        elif n != batch_size:
            count = f"{batch_size} images" if images else f"batch_size={batch_size}"
            raise ValueError(f"got {n} class labels for {count}; give one label or one per image")
        return ids, batch_size

    def _resolve_guidance_scale(self, guidance_scale, labels) -> Optional[float]:
        if guidance_scale is None:
            return DEFAULT_GUIDANCE_SCALE if labels is not None else None
        if not self.num_classes:
            raise ValueError(
                f"guidance_scale={guidance_scale!r} was given but this UNet is unconditional: classifier-free guidance"
                " needs a class-conditional model (train with --class_conditional)"
            )
        if labels is None:
            raise ValueError(
                f"guidance_scale={guidance_scale!r} needs class_labels: guidance steers samples toward a class"
            )
        if (
            isinstance(guidance_scale, bool)
            or not isinstance(guidance_scale, numbers.Real)
            or not math.isfinite(guidance_scale)
            or guidance_scale < 0
        ):
            raise ValueError(
                f"guidance_scale must be a finite number >= 0, got {guidance_scale!r} (0: unconditional, 1: plain"
                " conditional, > 1: stronger guidance)"
            )
        return float(guidance_scale)

    def _check_call_inputs(
        self, batch_size, generator, num_inference_steps, output_type, eta, tensor_inputs
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        _check_generator(generator)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"got a list of {len(generator)} generators for batch_size={batch_size}; pass one per image or a"
                " single generator"
            )
        T = self.scheduler.config.num_train_timesteps
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int)
            or not 1 <= num_inference_steps <= T
        ):
            raise ValueError(f"num_inference_steps must be an integer in [1, {T}], got {num_inference_steps!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} is not supported; allowed: {', '.join(OUTPUT_TYPES)}")
        if eta is not None:
            _check_eta(eta)
            if "eta" not in inspect.signature(self.scheduler.step).parameters:
                raise ValueError(f"eta={eta} needs a scheduler whose step takes eta; {type(self.scheduler).__name__} does not")
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} not allowed; allowed: {self._callback_tensor_inputs}"
            )

    @property
    def num_timesteps(self) -> int:
        """The number of denoising steps of the last (or running) call."""
        return getattr(self, "_num_timesteps", None)

    # ------------------------------------------------------------------ likelihood
    @torch.no_grad()
    def bits_per_dim(
        self,
        images: Union[torch.Tensor, Any, List[Any]],
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        timestep_batch_size: int = 1,
        batch_size: Optional[int] = None,
        return_terms: bool = False,
        clip_denoised: Optional[bool] = None,
        class_labels: Optional[Union[int, str, List[Union[int, str]], torch.Tensor]] = None,
    ) -> Union[torch.Tensor, BitsPerDimOutput]:
        """
        Each image's negative log-likelihood bound in bits per dimension: L_T + Σ_{t>1} L_{t-1} + L_0 (DDPM eq. 5),
        the figure the DDPM and IDDPM papers report. One Monte-Carlo draw of x_t ~ q(x_t | x_0) per term.

        Args:
            images: a float tensor [B, C, H, W] in [-1, 1] on the 256-level grid, a uint8 tensor [B, C, H, W], or
                PIL images.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): source of the forward noise.
            timestep_batch_size (`int`, defaults to 1): timesteps evaluated per network call (faster for small B).
            batch_size (`int`, *optional*): images per network call; defaults to all of them.
            return_terms (`bool`, defaults to `False`): return a [`BitsPerDimOutput`] with the per-term breakdown.
            clip_denoised (`bool`, *optional*): clip x̂_0; defaults to the scheduler's config.
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*; class-conditional models): each image's
                class (ids or names; one for all or one per image) for the conditional bound −log p(x | y); `None`
                gives the null class's (unconditional) bound.

        Returns:
            `torch.Tensor` [B] of bits/dim, or [`BitsPerDimOutput`] when `return_terms`.
        """
        scheduler = self.scheduler
        if not hasattr(scheduler, "vb_terms_bpd"):
            raise ValueError(
                f"bits_per_dim needs a DDPMExtScheduler, got {type(scheduler).__name__}; load one with"
                " DDPMExtScheduler.from_config(pipe.scheduler.config)"
            )
        if isinstance(timestep_batch_size, bool) or not isinstance(timestep_batch_size, int) or timestep_batch_size < 1:
            raise ValueError(f"timestep_batch_size must be an integer >= 1, got {timestep_batch_size!r}")
        _check_generator(generator)
        x0 = self._images_to_model_range(images)
        n = x0.shape[0]
        labels, _ = self._resolve_class_labels(class_labels, n, images=True)
        if labels is None and self.num_classes:
            labels = torch.full((n,), self.null_class_id, dtype=torch.long)
        device = self._execution_device
        x0 = x0.to(device)
        labels = None if labels is None else labels.to(device)
        if isinstance(generator, list) and len(generator) != n:
            raise ValueError(f"got {len(generator)} generators for {n} images; pass one per image or one in all")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        batch_size = batch_size or n
        T = scheduler.config.num_train_timesteps
        dtype = self.unet.dtype

        vb = torch.zeros(n, T, device=device, dtype=torch.float32)
        # descending timesteps in chunks of timestep_batch_size: [T-1, T-2, ...], ...
        chunks = [[T - 1 - i for i in range(s, min(s + timestep_batch_size, T))] for s in range(0, T, timestep_batch_size)]
        progress = self.progress_bar(total=len(chunks) * math.ceil(n / batch_size))
        for ts in chunks:
            k = len(ts)
            # forward noise drawn one timestep at a time, so timestep_batch_size changes speed, not the numbers
            noise = torch.stack(
                [randn_tensor(tuple(x0.shape), generator=generator, device=device, dtype=torch.float32) for _ in ts],
                dim=1,
            )
            for s in range(0, n, batch_size):
                e = min(s + batch_size, n)
                b = e - s
                x0_b = x0[s:e].unsqueeze(1).expand(b, k, *x0.shape[1:]).reshape(b * k, *x0.shape[1:])
                t_b = torch.tensor(ts, device=device).repeat(b)
                x_t = scheduler.add_noise(x0_b, noise[s:e].reshape(b * k, *x0.shape[1:]), t_b)
                extra = {} if labels is None else {"class_labels": labels[s:e].repeat_interleave(k)}
                model_output = self.unet(x_t.to(dtype), t_b, **extra).sample
                terms = scheduler.vb_terms_bpd(model_output, x0_b, x_t, t_b, clip_denoised=clip_denoised)["output"]
                vb[s:e, ts] = terms.reshape(b, k).float()
                progress.update()
        progress.close()
        prior = scheduler.prior_bpd(x0).float()
        total = prior + vb.sum(dim=1)
        if not return_terms:
            return total
        return BitsPerDimOutput(bits_per_dim=total, prior_bpd=prior, vb_terms_bpd=vb, decoder_bpd=vb[:, 0])

    def _images_to_model_range(self, images) -> torch.Tensor:
        """Images as float32 [B, C, H, W] in [-1, 1] on the 256-level grid; anything else is a ValueError."""
        channels = self.unet.config.in_channels
        if not isinstance(images, torch.Tensor):
            pil = images if isinstance(images, (list, tuple)) else [images]
            if not pil or not all(hasattr(im, "convert") and hasattr(im, "size") for im in pil):
                raise ValueError(
                    f"images must be a torch.Tensor or PIL images, got {type(images).__name__}"
                    + (f" of {type(pil[0]).__name__}" if isinstance(images, (list, tuple)) and pil else "")
                )
            mode = {1: "L", 3: "RGB"}.get(channels)
            if mode is None:
                raise ValueError(f"PIL input needs a 1- or 3-channel model, this UNet has {channels} channels")
            arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for im in pil]
            if len({a.shape for a in arrays}) != 1:
                raise ValueError(f"PIL images differ in size: {sorted({a.shape for a in arrays})}")
            stacked = np.stack(arrays)
            stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
            images = torch.from_numpy(stacked.copy())
        if images.ndim != 4:
            raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError(f"images is an empty batch (shape {tuple(images.shape)}); pass at least one image")
        if images.shape[1] != channels:
            raise ValueError(f"images have {images.shape[1]} channels but the UNet takes {channels}")
        size = self.unet.config.sample_size
        expected = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(images.shape[2:]) != expected:
            raise ValueError(f"images are {tuple(images.shape[2:])} but the UNet was trained at {expected}")
        if images.dtype == torch.uint8:
            return images.float() / 127.5 - 1.0
        if not images.is_floating_point():
            raise ValueError(f"images must be uint8 or float, got {images.dtype}")
        x = images.float()
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            raise ValueError(
                f"images hold {int((~finite).sum())} NaN or infinite values; allowed: finite values in [-1, 1] on"
                " the 256-level grid"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
            raise ValueError(f"float images must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]")
        levels = (x + 1.0) * 127.5
        off = float((levels - levels.round()).abs().max())
        # float16 / bfloat16 hold k/127.5 - 1 only approximately: rounding a grid value costs up to 127.5·eps/4
        # levels (0.031 in fp16, 0.25 in bf16), computing it in fp16 (u.half() / 127.5 - 1) up to 127.5·eps/2. Allow
        # 127.5·eps levels there, at most 0.3 (bf16: its rounding, not its arithmetic); 1e-3 levels in fp32/fp64
        tol = 1e-3
        if images.dtype not in (torch.float32, torch.float64):
            tol = min(0.3, 127.5 * torch.finfo(images.dtype).eps)
        if off > tol:
            raise ValueError(
                f"float images must lie on the 256-level grid k/127.5 - 1 (k = 0..255); some values are {off:.3g}"
                f" levels off it (allowed in {images.dtype}: {tol:.3g}). Quantize in float32 first:"
                " ((x.float() + 1) * 127.5).round() / 127.5 - 1, or pass uint8 images"
            )
        return levels.round() / 127.5 - 1.0

    # ------------------------------------------------------------------ saving and publishing
    # set by the installed package to `ddpm_ext.hub` (one upload helper, ddpm-ext's model card); None in saved copies,
    # which publish through diffusers' own `push_to_hub` / `save_pretrained(push_to_hub=True)`, kept to
    # PUBLISH_ALLOW_PATTERNS by `_upload_folder`
    _hub = None

    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        max_shard_size: Optional[Union[int, str]] = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """
        Save a self-contained folder: the UNet (safetensors), the scheduler config, this module as
        `pipeline_ddpm_ext.py`, the scheduler's module as `scheduler/scheduling_ddpm_ext.py`, and a
        `model_index.json` naming them as `[module, class]`, so `DiffusionPipeline.from_pretrained(folder,
        trust_remote_code=True)` works without ddpm-ext and `DDPMExtPipeline.from_pretrained(folder)` with it.
        Takes the arguments of `DiffusionPipeline.save_pretrained`; with `push_to_hub=True` (and `repo_id`, `token`,
        `private`, `commit_message`, `create_pr`) it uploads only the pipeline files, `README.md` (written if
        missing) and `sample_grid.png` (`PUBLISH_ALLOW_PATTERNS`), never the other files of the folder.
        """
        saving = dict(safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size)
        if push_to_hub and self._hub is not None:  # ddpm-ext installed: ddpm_ext.hub publishes
            super().save_pretrained(save_directory, **saving, **{k: v for k, v in kwargs.items() if k in _SAVE_KEYS})
            self._hub.push_saved_pipeline(self, save_directory, **kwargs)
        else:
            super().save_pretrained(save_directory, **saving, push_to_hub=push_to_hub, **kwargs)

    def save_config(self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False, **kwargs) -> None:
        """`model_index.json`, which `save_pretrained` writes after the components and before any upload, then the
        self-contained layout (`write_remote_code_layout`)."""
        if push_to_hub:
            raise ValueError("save_config(push_to_hub=True) is not supported; use save_pretrained or push_to_hub")
        super().save_config(save_directory, **kwargs)
        write_remote_code_layout(self, save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        revision: Optional[str] = None,
        model_card: Optional[str] = None,
    ) -> CommitInfo:
        """
        Upload the self-contained folder (see `save_pretrained`) and a model card to the Hugging Face Hub; only
        `PUBLISH_ALLOW_PATTERNS` are sent.

        Args:
            repo_id (`str`): `namespace/name`; validated before anything is uploaded.
            commit_message (`str`, *optional*): defaults to "Upload DDPMExtPipeline".
            private (`bool`, *optional*): create the repo private (ignored if it exists).
            token (`str`, *optional*): a Hub token; defaults to the logged-in one.
            create_pr (`bool`, defaults to `False`): open a pull request instead of committing.
            safe_serialization (`bool`, defaults to `True`), variant (`str`, *optional*): as in `save_pretrained`.
            revision (`str`, *optional*; ddpm-ext installed): branch to commit to; created if it does not exist.
            model_card (`str`, *optional*; ddpm-ext installed): README.md text; defaults to a card that says how to
                load the model.

        Returns:
            `huggingface_hub.CommitInfo`: the commit (`.oid`, `.commit_url`).
        """
        pushing = dict(commit_message=commit_message, private=private, token=token, create_pr=create_pr,
                       safe_serialization=safe_serialization, variant=variant)
        if self._hub is not None:
            return self._hub.push_pipeline(self, repo_id, revision=revision, model_card=model_card, **pushing)
        if revision is not None or model_card is not None:
            raise ValueError(
                f"push_to_hub(revision={revision!r}, model_card=...) needs ddpm-ext installed (pip install ddpm-ext);"
                " without it diffusers' push_to_hub runs, which takes neither"
            )
        return super().push_to_hub(repo_id, **pushing)  # a saved copy: diffusers' push, through `_upload_folder`

    def _upload_folder(self, working_dir, repo_id, token=None, commit_message=None, create_pr=False, subfolder=None):
        # diffusers' push paths upload through here: only what a published model consists of
        return upload_folder(
            repo_id=repo_id,
            folder_path=working_dir,
            token=token,
            commit_message=commit_message or f"Upload {type(self).__name__}",
            create_pr=create_pr,
            path_in_repo=subfolder,
            allow_patterns=PUBLISH_ALLOW_PATTERNS,
            ignore_patterns=PUBLISH_IGNORE_PATTERNS,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs) -> "DDPMExtPipeline":
        """
        Load a saved ddpm-ext folder or Hub repo, or one in stock diffusers' DDPM layout (its `DDPMScheduler` entry is
        upgraded to `DDPMExtScheduler`), through diffusers' own loader: every keyword of
        `DiffusionPipeline.from_pretrained` (`dtype` / `torch_dtype` and their per-component dicts, `variant`,
        `use_safetensors`, `low_cpu_mem_usage`, `device_map`, `revision`, `cache_dir`, `local_files_only`, `token`,
        `unet=` / `scheduler=` components, ...) behaves as it does for `DDPMPipeline`.

        With ddpm-ext installed this runs no code from the folder: `model_index.json`'s ddpm-ext entries are read as the
        installed classes (see `load_config`). In a copy of this module loaded as remote code it is diffusers' loader
        unchanged.
        """
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file: Union[str, os.PathLike]) -> Dict[str, Any]:
        # diffusers treats a `[module, class]` pipeline entry as remote code; with the plugin installed this class is
        # that code, so the entry names it (diffusers' loader then uses `cls` itself, also when downloading)
        config = super()._dict_from_json_file(json_file)
        name = config.get("_class_name")
        if cls._default_scheduler_class is not None and isinstance(name, list) and name[:1] == [PIPELINE_MODULE]:
            config["_class_name"] = name[1]
        return config

    @classmethod
    def load_config(cls, *args, **kwargs):
        """`ConfigMixin.load_config`; with ddpm-ext installed, the scheduler entries `["scheduling_ddpm_ext",
        "DDPMExtScheduler"]` and stock `["diffusers", "DDPMScheduler"]` name the installed `DDPMExtScheduler` by its
        module path, which diffusers' loader resolves from the already imported module (no remote code)."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        installed = cls._default_scheduler_class
        entry = config.get("scheduler")
        if installed is not None and isinstance(entry, list) and len(entry) == 2:
            if tuple(entry) in ((SCHEDULER_MODULE, "DDPMExtScheduler"), ("diffusers", "DDPMScheduler")):
                config["scheduler"] = [installed.__module__, installed.__name__]
        return loaded


# ---------------------------------------------------------------------- helpers (module level, self-contained)
def classifier_free_guidance(
    conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float, channels: int
) -> torch.Tensor:
    """ε_null + s·(ε_cond − ε_null) on the first `channels` channels (the prediction); any further channels (a
    learned variance) are the conditional output's, as in GLIDE."""
    guided = unconditional[:, :channels] + guidance_scale * (conditional[:, :channels] - unconditional[:, :channels])
    if conditional.shape[1] == channels:
        return guided
    return torch.cat([guided, conditional[:, channels:]], dim=1)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_id2label(unet, id2label) -> Optional[Dict[str, str]]:
    """The class names of a class-conditional UNet as `{"0": name, ...}`; None for an unconditional one."""
    if unet is None:
        return None
    config = unet.config
    if getattr(config, "class_embed_type", None) is not None:
        raise ValueError(
            f"class_embed_type={config.class_embed_type!r} is not supported; class-conditional ddpm-ext models use"
            " num_class_embeds (a learned embedding per class plus the null class)"
        )
    embeds = getattr(config, "num_class_embeds", None)
    if embeds is None:
        if id2label:
            raise ValueError(
                f"id2label with {len(id2label)} classes was given but the UNet is unconditional (num_class_embeds is"
                " None); a class-conditional UNet has num_class_embeds = number of classes + 1"
            )
        return None
    num_classes = embeds - 1
    if num_classes < 1:
        raise ValueError(
            f"num_class_embeds={embeds} leaves no class: a class-conditional UNet has num_class_embeds = number of"
            " classes + 1 (the last embedding is the null class of classifier-free guidance)"
        )
    if id2label is None:
        return {str(i): str(i) for i in range(num_classes)}
    if not isinstance(id2label, dict):
        raise ValueError(f"id2label must be a dict {{id: name}}, got {type(id2label).__name__}")
    try:
        named = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError(f"id2label keys must be class ids 0..{num_classes - 1}, got {list(id2label)}") from None
    if sorted(named) != list(range(num_classes)):
        raise ValueError(
            f"id2label must name the classes 0..{num_classes - 1} exactly once (num_class_embeds={embeds}: {num_classes}"
            f" classes + the null class), got ids {sorted(named)}"
        )
    names = [named[i] for i in range(num_classes)]
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"id2label names must be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"id2label names must be unique, got {names}")
    return {str(i): named[i] for i in range(num_classes)}


def _scheduler_learns_variance(scheduler) -> bool:
    # a config copied from another scheduler may carry variance_type without the class using it (DDIMScheduler)
    takes_it = "variance_type" in inspect.signature(type(scheduler).__init__).parameters
    return takes_it and getattr(scheduler.config, "variance_type", None) in LEARNED_VARIANCE_TYPES


def _check_eta(eta) -> None:
    """η of a DDIM step: a real number in [0, 1] (Song et al. 2021: σ_t = η √β̃_t, 0 deterministic, 1 ancestral)."""
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(eta) or not 0 <= eta <= 1:
        raise ValueError(
            f"eta must be >= 0 and <= 1, got {eta!r}; allowed: a number in [0, 1] (0 deterministic DDIM, 1 the"
            " ancestral variance) or None for DDPM steps"
        )


def _check_generator(generator) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, list) and all(isinstance(g, torch.Generator) for g in generator):
        return
    raise ValueError(
        f"generator={generator!r} is not allowed; expected None, a torch.Generator (e.g."
        " torch.Generator().manual_seed(0)) or a list of them, one per image"
    )


def _check_channels(unet, scheduler) -> None:
    if unet is None or scheduler is None or "variance_type" not in inspect.signature(type(scheduler).__init__).parameters:
        return
    variance_type = scheduler.config.variance_type
    c_in, c_out = unet.config.in_channels, unet.config.out_channels
    if variance_type in LEARNED_VARIANCE_TYPES and c_out != 2 * c_in:
        raise ValueError(
            f"the scheduler's variance_type={variance_type!r} needs a UNet with out_channels = 2 × in_channels"
            f" = {2 * c_in}, this UNet has out_channels={c_out}"
        )
    if variance_type not in LEARNED_VARIANCE_TYPES and c_out != c_in:
        raise ValueError(
            f"the UNet has out_channels={c_out} but in_channels={c_in}; variance_type={variance_type!r} needs"
            f" them equal (use variance_type='learned_range' or 'learned' for a UNet that predicts its variance)"
        )


def write_remote_code_layout(pipe, save_directory: Union[str, os.PathLike]) -> None:
    """Copy the pipeline's and scheduler's modules into `save_directory` and name them in `model_index.json`."""
    index_path = os.path.join(save_directory, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    os.makedirs(os.path.join(save_directory, "scheduler"), exist_ok=True)
    pipeline_source = inspect.getsourcefile(type(pipe))
    shutil.copyfile(pipeline_source, os.path.join(save_directory, PIPELINE_MODULE + ".py"))
    index["_class_name"] = [PIPELINE_MODULE, type(pipe).__name__]
    scheduler = pipe.scheduler
    if hasattr(scheduler, "vb_terms_bpd"):  # ours (installed or a remote-code copy): ship its module
        scheduler_source = inspect.getsourcefile(type(scheduler))
        shutil.copyfile(scheduler_source, os.path.join(save_directory, "scheduler", SCHEDULER_MODULE + ".py"))
        index["scheduler"] = [SCHEDULER_MODULE, type(scheduler).__name__]
    else:
        stale = os.path.join(save_directory, "scheduler", SCHEDULER_MODULE + ".py")
        if os.path.exists(stale):
            os.remove(stale)
        index["scheduler"] = ["diffusers", type(scheduler).__name__]
    index["unet"] = ["diffusers", "UNet2DModel"]
    index.pop("_name_or_path", None)
    tmp = index_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, index_path)
