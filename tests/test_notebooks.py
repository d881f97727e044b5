"""The example notebooks run end to end on the virtual environment's own kernel (nbclient,
ipykernel), at a small scale set after each one's `parameters` cell: synthetic data, one epoch.
Each must finish without an error, and show its figures."""

import json
from pathlib import Path

import nbformat
import pytest
from conftest import write_dataset

EXAMPLES = Path(__file__).parent.parent / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def small(data_dir: Path, out: Path) -> dict:
    return {
        "MODELS": ["shallow"],
        "SHIPPED": [],
        "MODEL": "shallow",
        "EPOCHS": 1,
        "DATA_DIR": str(data_dir),
        "VERIFY": False,
        "OUT": str(out),
        "EXAMPLES": str(EXAMPLES),
        "FOLDS": 2,
        "REPEATS": 1,
        "AUDIT_SETTINGS": {"model": "shallow", "epochs": 1, "batch_size": 32, "whiten": False},
    }


def with_parameters(book, values: dict):
    """The notebook with a cell after its `parameters` cell setting the ones it declares."""
    (at,) = [i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", [])]
    declared = book.cells[at].source
    lines = [f"{k} = {v!r}" for k, v in values.items() if f"{k} =" in declared]
    book.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(lines)))
    return book


def test_the_notebooks_are_stored_without_outputs():
    assert NOTEBOOKS == ["audit_and_explain.ipynb", "study.ipynb", "your_network.ipynb"]
    for name in NOTEBOOKS:
        book = nbformat.read(EXAMPLES / name, as_version=4)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in book.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebook_runs_and_shows_its_figures(name, tmp_path):
    from nbclient import NotebookClient

    write_dataset(tmp_path / "data", train_per_class=20)
    book = with_parameters(nbformat.read(EXAMPLES / name, as_version=4), small(tmp_path / "data", tmp_path / "out"))
    NotebookClient(book, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [
        o
        for o in outputs
        if "image/png" in o.get("data", {}) or "data:image/png" in o.get("data", {}).get("text/html", "")
    ]
    assert images, f"{name} showed no figure"
    nbformat.write(book, tmp_path / name)  # the executed notebook holds its figures
    assert "image/png" in json.dumps(nbformat.read(tmp_path / name, as_version=4).dict())
