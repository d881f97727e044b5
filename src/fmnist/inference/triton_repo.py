"""A Triton model repository of runs: one model per run, named as the run.

    NAME/config.pbtxt   the model's configuration (Triton's protobuf text format)
    NAME/labels.txt     the class names, one per line: Triton's classification extension answers them
    NAME/1/model.onnx   the run's checked export (with its test-time views), and its .json description
    NAME/1/model.py     with the Python backend only: the ONNX file run by ONNX Runtime inside Triton

With the `onnxruntime` backend it is the layout Triton's own container and KServe's Triton runtime
serve; with the `python` backend, the PyPI `tritonserver` (which has only that backend) serves it
too. Each model is written beside the repository's folder and moved in whole, so a repository never
holds half a model.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from fmnist.data import CLASSES
from fmnist.errors import FmnistError, UsageError
from fmnist.files import write_json, write_text

BACKENDS = ("onnxruntime", "python")
MAX_BATCH = 256  # images Triton may put in one batch
PREFERRED_BATCHES = (16, 64)
QUEUE_DELAY_US = 1000  # how long a batch waits for more requests: the same millisecond as `fmnist serve`
MARKER = "fmnist.json"  # in each model folder fmnist wrote: what it came from (Triton ignores it)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def config_text(
    name: str,
    backend: str,
    info: dict,
    max_batch: int = MAX_BATCH,
    queue_delay_us: int = QUEUE_DELAY_US,
    instances: int = 1,
) -> str:
    """The model's config.pbtxt: images FP32 [1, 28, 28] in, logits FP32 [10] out with the class names
    as labels, dynamic batching, CPU instances; the run's temperature and test accuracy as parameters."""
    preferred = ", ".join(str(b) for b in PREFERRED_BATCHES if b <= max_batch)
    params = "\n".join(
        f"parameters {{ key: {quoted(k)} value: {{ string_value: {quoted(v)} }} }}"
        for k, v in info.items()
        if v is not None
    )
    return f"""name: {quoted(name)}
backend: {quoted(backend)}
max_batch_size: {max_batch}
input [
  {{
    name: "images"
    data_type: TYPE_FP32
    dims: [ 1, 28, 28 ]
  }}
]
output [
  {{
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 10 ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  {f"preferred_batch_size: [ {preferred} ]" if preferred else ""}
  max_queue_delay_microseconds: {queue_delay_us}
}}
instance_group [
  {{
    count: {instances}
    kind: KIND_CPU
  }}
]
{params}
"""


def quoted(value) -> str:
    """A string in protobuf's text format: quoted, with its backslashes and quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def is_repository(path: Path) -> bool:
    """Whether `path` is a Triton model repository: a folder of model folders, each with config.pbtxt."""
    models = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")] if path.is_dir() else []
    return bool(models) and all((p / "config.pbtxt").is_file() for p in models)


def model_names(runs: list[Path]) -> list[str]:
    """The runs' model names (their folders' names): unique, and names Triton takes."""
    names = [run.resolve().name for run in runs]
    for name in names:
        if not _NAME.match(name):
            raise UsageError(f"run folder name {name!r} cannot name a Triton model (letters, digits, _ . - only)")
    seen = {n for n in names if names.count(n) > 1}
    if seen:
        raise UsageError(f"two runs are named {sorted(seen)[0]!r}: a repository's models need different names")
    return names


def check_repository_out(out: Path, names: list[str]) -> None:
    """A repository is written into a new or empty folder, or one fmnist wrote, whose models of the
    same names it replaces; anything else there is refused."""
    if out.exists() and not out.is_dir():
        raise FmnistError(f"--out {out} is a file; give a folder for the Triton model repository")
    if not out.parent.is_dir():
        raise FmnistError(f"cannot write {out}: folder {out.parent} does not exist")
    for name in names:
        folder = out / name
        if folder.exists() and not (folder / MARKER).is_file():
            raise FmnistError(f"{folder} exists and was not written by fmnist; give another --out")


def write_repository(
    runs: list[Path],
    out: Path,
    backend: str = "onnxruntime",
    data_dir: str | None = None,
    verify: bool | None = None,
    max_batch: int = MAX_BATCH,
    queue_delay_us: int = QUEUE_DELAY_US,
) -> list[dict]:
    """Export each run into the repository `out` (its checks passed first, as `fmnist export`'s);
    returns each model's name, folder and export description."""
    from fmnist.jobs.export import export_run

    if backend not in BACKENDS:
        raise UsageError(f"--triton-backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    names = model_names(runs)
    check_repository_out(out, names)
    out.mkdir(exist_ok=True)
    written = []
    for run, name in zip(runs, names):
        with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out) as tmp:
            staged = Path(tmp) / name
            (staged / "1").mkdir(parents=True)
            d = export_run(run, staged / "1" / "model.onnx", data_dir=data_dir, verify=verify)
            info = {
                "temperature": d["calibration"]["temperature"],
                "test_accuracy": d["source"]["test_accuracy"],
                "run": d["source"]["run"],
                "tta_flip": str(d["test_time_augmentation"]["flip"]).lower(),
                "tta_shift": d["test_time_augmentation"]["shift"],
            }
            write_text(staged / "config.pbtxt", config_text(name, backend, info, max_batch, queue_delay_us))
            write_text(staged / "labels.txt", "\n".join(CLASSES) + "\n")
            if backend == "python":
                shutil.copyfile(Path(__file__).parents[1] / "serve" / "triton_model.py", staged / "1" / "model.py")
            write_json(staged / MARKER, {"run": d["source"]["run"], "backend": backend, "export": d})
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)
        written.append({"name": name, "folder": str(out / name), "export": d})
    return written
