"""Timing helpers shared by the benchmark scripts."""

import time


class ForwardTimer:
    """Replaces a module's forward with a wrapper that accumulates the wall time spent inside it."""

    def __init__(self, module):
        self.total = 0.0
        self.calls = 0
        self._forward = module.forward
        module.forward = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self._forward(*args, **kwargs)
        self.total += time.perf_counter() - start
        self.calls += 1
        return out
