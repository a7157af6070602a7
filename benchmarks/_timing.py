"""Timing helpers shared by the benchmark scripts."""

import time

import torch


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class ForwardTimer:
    """Replaces a module's forward with a wrapper that accumulates the wall time spent inside it.

    With `sync_device` set to a CUDA device it waits for the device before and after each forward, so the time is the
    forward's execution, not its launch (this adds two host syncs per call: use it to split time, not to time the
    loop itself).
    """

    def __init__(self, module):
        self.total = 0.0
        self.calls = 0
        self.sync_device = None
        self._forward = module.forward
        module.forward = self

    def __call__(self, *args, **kwargs):
        if self.sync_device is not None:
            synchronize(self.sync_device)
        start = time.perf_counter()
        out = self._forward(*args, **kwargs)
        if self.sync_device is not None:
            synchronize(self.sync_device)
        self.total += time.perf_counter() - start
        self.calls += 1
        return out
