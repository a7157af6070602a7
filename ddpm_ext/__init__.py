"""ddpm-ext: DDPM and Improved-DDPM for Hugging Face diffusers."""

from .schedulers import DDPMExtScheduler

__version__ = "0.1.0"

__all__ = ["DDPMExtScheduler", "__version__"]
