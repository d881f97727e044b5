"""Stops: a run that ends early without anything being wrong with what the user asked for.

Ctrl-C or SIGTERM, a loss that diverged and a sweep's pruner are not user errors (FmnistError):
each has its own type, and only the code that must react to it catches it. The CLI turns a stop
into one line and its own exit code (130 for Ctrl-C, 143 for SIGTERM, 1 for a divergence).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


class Stop(Exception):
    """A run stopped before its end; `exit_code` is what the command exits with."""

    exit_code = 1


class Interrupted(Stop):
    """Ctrl-C or SIGTERM; where a run was training, its last.pt holds it up to the step reached."""

    def __init__(
        self, signum: int = signal.SIGINT, epoch: int = 0, step: int = 0, run_dir: Path | None = None, then: str = ""
    ):
        where = f" during epoch {epoch}" if epoch else ""
        saved = (
            f"; saved at step {step} of epoch {epoch}, resume with: fmnist resume {run_dir}"
            if run_dir is not None and not then
            else f"; {then}"
            if then
            else ""
        )
        super().__init__(f"interrupted{where} ({signal.Signals(signum).name}){saved}")
        self.signum, self.epoch, self.step = signum, epoch, step
        self.exit_code = 128 + int(signum)


class Diverged(Stop):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int, kept: bool = True):
        kept_text = (
            "the last good checkpoint is kept"
            if kept
            else "before the first checkpoint, so nothing was kept to evaluate or resume"
        )
        super().__init__(f"loss became NaN or infinite at epoch {epoch}, step {step}; {kept_text} (try a lower --lr)")
        self.epoch, self.step = epoch, step


class Pruned(Stop):
    """A sweep's pruner stopped a trial after `epoch`: below the other trials there."""

    def __init__(self, epoch: int):
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


class StopFlag:
    """Set by Ctrl-C or SIGTERM while `catching()` is active, read between training steps (so the
    weights are never caught half-updated) and between sweep trials. A second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth = 0

    @property
    def set(self) -> bool:
        return self.signum is not None

    def clear(self) -> None:
        self.signum = None

    def _handler(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def catching(self) -> Iterator[StopFlag]:
        """Install the handlers (main thread only); nested uses share the outer installation, and
        the flag is cleared when the outermost one ends."""
        if threading.current_thread() is not threading.main_thread() or self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            self.signum = None  # the stop it asked for has been acted on
            for s, h in previous.items():
                signal.signal(s, h)


STOP = StopFlag()  # one per process: a signal is the process's, whatever it is doing
