# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""SIGTERM / SIGINT during training: stop at a step boundary with a checkpoint.

The first signal sets a flag; the run saves a checkpoint at the next step boundary and returns with
`interrupted_by` set; the command line then exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as
shells report a killed process, so job schedulers see the run as unfinished. A second Ctrl-C aborts at once. The
handlers stay installed until the end-of-run outputs are written. Under a launcher, a thread also watches the
launcher and sends SIGTERM to this process when it is gone (see `checkpoints.ParentWatch`).
"""

import logging
import signal
import threading
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)


class SignalFlag:
    """Records SIGTERM / SIGINT; the loop checks it at step boundaries. A second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:  # the first signal decides the exit status
            self.signum = signum
        logger.warning("received %s: saving a checkpoint at the next step boundary", signal.Signals(signum).name)

    def __enter__(self) -> "SignalFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
