"""Progress output: live bars on a terminal; in a log or CI (not a terminal) none, so the one line
per epoch that training prints is all there is, as in Keras's `verbose=2`."""

from __future__ import annotations

import sys


def bars(quiet: bool = False) -> bool:
    """Whether to draw progress bars: not when asked to be quiet, not when stderr is no terminal
    (a bar there writes thousands of carriage-return frames)."""
    return not quiet and sys.stderr.isatty()
