import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from fmnist.reports import plots

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


def test_an_image_grid_puts_each_image_in_its_own_cell(tmp_path):
    captions = [f"#{i}\nsecond line" for i in range(7)]
    plots.image_grid(torch.zeros(7, 1, 28, 28), captions, [False] * 7, tmp_path / "g.png", "seven", cols=5)
    page = np.asarray(Image.open(tmp_path / "g.png").convert("L"))
    height, width = page.shape
    assert width == round(5 * 2.2 * 110)  # five cells of 2.2 inches at 110 dots an inch
    cell = width / 5
    top_row, bottom_row = page[int(height * 0.45)], page[int(height * 0.9)]  # across each row's images
    assert [top_row[int(cell * (c + 0.5))] < 50 for c in range(5)] == [True] * 5  # black images on white
    assert [bottom_row[int(cell * (c + 0.5))] < 50 for c in range(5)] == [True, True, False, False, False]
    assert all(top_row[int(cell * c) + 2] > 200 for c in range(1, 5))  # a white margin between cells
