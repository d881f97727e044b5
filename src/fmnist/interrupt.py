"""Stopping training cleanly on Ctrl-C or SIGTERM: a flag read between steps, and the error that
reports where the run was saved."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from .errors import FmnistError


class Interrupted(FmnistError):
    """Ctrl-C or SIGTERM during training; last.pt then holds the run up to the step it reached."""

    exit_code = 130

    def __init__(self, epoch: int, step: int, run_dir: Path | None):
        where = (f"; saved at step {step} of epoch {epoch}, resume with: fmnist resume {run_dir}"
                 if run_dir is not None else "")
        super().__init__(f"interrupted during epoch {epoch}{where}")
        self.epoch, self.step = epoch, step


class StopFlag:
    """Ctrl-C and SIGTERM set a flag that the loop reads between steps, so the weights are never
    caught half-updated and the exact step can be saved. A second signal stops at once."""

    def __init__(self) -> None:
        self.set = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.set:
                raise KeyboardInterrupt
            self.set = True

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
