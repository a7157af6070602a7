from .scheduling_ddpm_ext import DDPMExtScheduler, DDPMExtSchedulerOutput

__all__ = ["DDPMExtScheduler", "DDPMExtSchedulerOutput"]
