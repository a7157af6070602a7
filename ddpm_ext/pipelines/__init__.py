from ..schedulers import DDPMExtScheduler
from .pipeline_ddpm_ext import BitsPerDimOutput, DDPMExtPipeline

# The installed package loads its own scheduler class, so DDPMExtPipeline.from_pretrained runs no remote code.
DDPMExtPipeline._default_scheduler_class = DDPMExtScheduler

__all__ = ["BitsPerDimOutput", "DDPMExtPipeline"]
