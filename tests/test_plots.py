import subprocess
import sys

SCRIPT = """
import sys, tempfile, pathlib, matplotlib
matplotlib.use("svg")  # what a notebook or an app chose
import fmnist.jobs.train
from fmnist.reports import plots
out = pathlib.Path(tempfile.mkdtemp())
rows = [{"epoch": 1, "train_accuracy": 0.5, "val_accuracy": 0.4, "train_loss": 1.0, "val_loss": 1.2}]
plots.curves(rows, out / "c.png", "m")
plots.confusion([[1] * 10] * 10, out / "m.png")
assert (out / "c.png").read_bytes()[:4] == b"\\x89PNG", "not a PNG"
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_importing_and_plotting_leave_the_global_backend_alone():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"]
