"""Progress output: live bars on a terminal and in a notebook (tqdm.auto draws a notebook's own);
in a log or CI (not a terminal) none, so the one line per epoch that training prints is all there
is, as in Keras's `verbose=2`."""

from __future__ import annotations

import sys


def bars(quiet: bool = False) -> bool:
    """Whether to draw progress bars: not when asked to be quiet, not when stderr is no terminal
    (a bar there writes thousands of carriage-return frames), except in a notebook."""
    return not quiet and (sys.stderr.isatty() or in_notebook())


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"
