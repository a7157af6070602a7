from .. import hub as _hub
from ..schedulers import DDPMExtScheduler
from .pipeline_ddpm_ext import BitsPerDimOutput, DDPMExtPipeline

# The installed package loads its own scheduler class, so DDPMExtPipeline.from_pretrained runs no remote code, and
# publishes through ddpm_ext.hub (one upload helper and model card for every push path).
DDPMExtPipeline._default_scheduler_class = DDPMExtScheduler
DDPMExtPipeline._hub = _hub

__all__ = ["BitsPerDimOutput", "DDPMExtPipeline"]
