"""fmnist's Python API: the commands as functions (calls.py) returning handles on the folders they
write (handles.py), which show themselves in a notebook (display.py)."""

from fmnist.api.calls import audit, ensemble, open, resume, runs, study, train
from fmnist.api.handles import Audit, Run, Study, Sweep

__all__ = ["Audit", "Run", "Study", "Sweep", "audit", "ensemble", "open", "resume", "runs", "study", "train"]
