"""ddpm-ext: DDPM and Improved-DDPM for Hugging Face diffusers."""

from .pipelines import BitsPerDimOutput, DDPMExtPipeline
from .schedulers import DDPMExtScheduler, DDPMExtSchedulerOutput

__version__ = "0.1.0"

__all__ = ["BitsPerDimOutput", "DDPMExtPipeline", "DDPMExtScheduler", "DDPMExtSchedulerOutput", "__version__"]
