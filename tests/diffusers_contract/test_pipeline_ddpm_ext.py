# coding=utf-8
# Copyright 2026 HuggingFace Inc.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
# Vendored by ddpm-ext from huggingface/diffusers@58eb52c0803ea9af3abec60841c2a093bdf1f951
# tests/pipelines/ddim/test_ddim.py: diffusers' DDIM fast test, the way it uses PipelineTesterMixin, pointed at
# DDPMExtPipeline + DDPMExtScheduler. Every change is marked "# ddpm-ext change:".

import unittest

import torch

from diffusers import UNet2DModel

# ddpm-ext change: the classes under test (were DDIMPipeline, DDIMScheduler)
from ddpm_ext import DDPMExtPipeline, DDPMExtScheduler

# ddpm-ext change: enable_full_determinism from the installed diffusers' test utilities (was ...testing_utils); the
# `slow`, `require_torch_accelerator` and `torch_device` imports went with the trimmed integration test
from diffusers.utils.testing_utils import enable_full_determinism

from .test_pipelines_common import PipelineTesterMixin

# ddpm-ext change: the two sets from diffusers' tests/pipelines/pipeline_params.py, inlined (was ..pipeline_params)
UNCONDITIONAL_IMAGE_GENERATION_PARAMS = frozenset(["batch_size"])
UNCONDITIONAL_IMAGE_GENERATION_BATCH_PARAMS = frozenset([])


enable_full_determinism()


class DDPMExtPipelineFastTests(PipelineTesterMixin, unittest.TestCase):  # ddpm-ext change: was DDIMPipelineFastTests
    pipeline_class = DDPMExtPipeline  # ddpm-ext change: was DDIMPipeline
    params = UNCONDITIONAL_IMAGE_GENERATION_PARAMS
    required_optional_params = PipelineTesterMixin.required_optional_params - {
        "num_images_per_prompt",
        "latents",
        "callback",
        "callback_steps",
    }
    batch_params = UNCONDITIONAL_IMAGE_GENERATION_BATCH_PARAMS

    def get_dummy_components(self):
        torch.manual_seed(0)
        unet = UNet2DModel(
            block_out_channels=(4, 8),
            layers_per_block=1,
            norm_num_groups=4,
            sample_size=8,
            in_channels=3,
            out_channels=3,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        )
        scheduler = DDPMExtScheduler()  # ddpm-ext change: was DDIMScheduler()
        components = {"unet": unet, "scheduler": scheduler}
        return components

    def get_dummy_inputs(self, device, seed=0):
        if str(device).startswith("mps"):
            generator = torch.manual_seed(seed)
        else:
            generator = torch.Generator(device=device).manual_seed(seed)
        inputs = {
            "batch_size": 1,
            "generator": generator,
            "num_inference_steps": 2,
            "output_type": "np",
        }
        return inputs

    # ddpm-ext change: trimmed test_inference (its expected slice is DDIMPipeline's golden output, a different
    # sampler); ddpm-ext's seeded parity with DDPMPipeline is tests/test_pipeline.py::
    # test_same_seeded_images_as_stock_ddpm_pipeline_with_ddpm_scheduler

    def test_dict_tuple_outputs_equivalent(self):
        super().test_dict_tuple_outputs_equivalent(expected_max_difference=3e-3)

    def test_save_load_local(self):
        super().test_save_load_local(expected_max_difference=3e-3)

    def test_save_load_optional_components(self):
        super().test_save_load_optional_components(expected_max_difference=3e-3)

    def test_inference_batch_single_identical(self):
        super().test_inference_batch_single_identical(expected_max_diff=3e-3)


# ddpm-ext change: trimmed DDIMPipelineIntegrationTests (slow, needs an accelerator and google/ddpm-cifar10-32 from
# the Hub: network)


# ddpm-ext change: diffusers' common tests skip `test_cfg` / `test_callback_cfg` for pipelines without a
# `guidance_scale` argument. DDPMExtPipeline has one for class-conditional models and refuses it for unconditional
# ones (guidance needs classes), so the unconditional class skips these two and the class-conditional class below
# runs them, and the whole mixin, against a UNet with `num_class_embeds` (3 classes + the null class).
DDPMExtPipelineFastTests.test_cfg = unittest.skip("unconditional model: guidance_scale is refused; see the class-conditional tests")(
    PipelineTesterMixin.test_cfg
)
DDPMExtPipelineFastTests.test_callback_cfg = unittest.skip(
    "unconditional model: guidance_scale is refused; see the class-conditional tests"
)(PipelineTesterMixin.test_callback_cfg)


class DDPMExtClassConditionalPipelineFastTests(DDPMExtPipelineFastTests):  # ddpm-ext change: a class-conditional twin
    # ddpm-ext change: class labels are the batched input (one per image), as prompts are for text-to-image
    params = UNCONDITIONAL_IMAGE_GENERATION_PARAMS | frozenset(["class_labels", "guidance_scale"])
    batch_params = frozenset(["class_labels"])

    def get_dummy_components(self):
        components = super().get_dummy_components()
        torch.manual_seed(0)
        # ddpm-ext change: the same dummy UNet with a class embedding (3 classes + the null class)
        components["unet"] = UNet2DModel(**{**components["unet"].config, "num_class_embeds": 4})
        return components

    def get_dummy_inputs(self, device, seed=0):
        inputs = super().get_dummy_inputs(device, seed)
        inputs["class_labels"] = 1  # ddpm-ext change: a class to sample, guided at the default scale
        return inputs

    test_cfg = PipelineTesterMixin.test_cfg
    test_callback_cfg = PipelineTesterMixin.test_callback_cfg
