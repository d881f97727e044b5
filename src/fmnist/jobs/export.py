"""`fmnist export`: a run's tested model (best.pt, with its test-time views) as an ONNX file and a
JSON description beside it, written only after every check of inference/onnx_export.py passes."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fmnist import __version__
from fmnist.data import CLASSES, FashionMNIST
from fmnist.errors import FmnistError
from fmnist.files import atomic_path, write_json
from fmnist.inference.onnx_export import FORMAT, PREPROCESSING, check_exported, sha256_of, sidecar_path, to_onnx
from fmnist.inference.onnx_runtime import INPUT, META_PREFIX, OUTPUT
from fmnist.models import count_params
from fmnist.run.folder import BEST, RunFolder, split_of
from fmnist.run.tracking import track_export
from fmnist.training.config import TrainConfig


def check_out(run: RunFolder, out: Path) -> None:
    """Refuse an --out that is not a new or replaceable .onnx file, or that is one of the run's own files."""
    if out.is_dir():
        raise FmnistError(f"--out {out} is a folder; give a file name such as {out / 'model.onnx'}")
    if run.is_own_file(out) or run.is_own_file(sidecar_path(out)):
        raise FmnistError(f"--out {out} is one of the run's own files; give another FILE.onnx")
    if out.suffix != ".onnx":
        raise FmnistError(f"--out {out}: give a file name ending in .onnx")
    if not out.parent.is_dir():
        raise FmnistError(f"cannot write {out}: folder {out.parent} does not exist")


def export_run(
    run_dir: Path,
    out: Path | None = None,
    data: FashionMNIST | None = None,
    data_dir: str | None = None,
    verify: bool | None = None,
) -> dict:
    """Write RUN_DIR's tested model as ONNX (default RUN_DIR/model.onnx) and its JSON description
    beside it (FILE.onnx.json); returns that description. Nothing is written unless every check
    passes. The checks run on the run's test images (found as `data_dir`/`verify` say, where given)."""

    run = RunFolder(run_dir).require()
    out = Path(out) if out is not None else run.export_path()
    check_out(run, out)
    f = float_export(run, data, data_dir, verify)
    description = describe(f.proto, f.meta["tta"], f.meta["source"], f.checks) | {"calibration": f.meta["calibration"]}
    description = write_export(run, out, f.proto, description)
    track_export(run, out)  # joins the run's MLflow run, where it was tracked
    return description


@dataclass
class FloatExport:
    """A run's tested model as a checked float ONNX graph, with what it was made from."""

    cfg: TrainConfig
    data: FashionMNIST
    proto: object  # onnx.ModelProto, with fmnist's metadata
    meta: dict  # classes, source, tta, calibration: the metadata and the description share them
    checks: dict  # what check_exported measured


def float_export(run: RunFolder, data: FashionMNIST | None, data_dir: str | None, verify: bool | None) -> FloatExport:
    """The run's best checkpoint exported (test-time views inside) and through every export check,
    on the run's test images; nothing is written."""
    model, cfg, _ = run.load_model()
    metrics = run.metrics() or {}
    meta = {
        "classes": list(CLASSES),
        "source": source_of(run, model, cfg, metrics),
        "tta": {"flip": cfg.tta, "shift": cfg.tta_shift},
        "calibration": calibration_of(metrics),
    }
    proto = to_onnx(copy.deepcopy(model), cfg, meta)
    data = data or run.data(cfg, data_dir, verify)
    return FloatExport(cfg, data, proto, meta, check_exported(proto, model, cfg, data.test_images))


def write_export(run: RunFolder, out: Path, proto, description: dict) -> dict:
    """The model file, then its JSON description with the file's name and SHA-256 (returned); neither
    is left without the other."""
    import onnx

    if out.parent.resolve() == run.path.resolve():  # inside the run: its files, removed with it
        run.record(out.name)
        run.record(sidecar_path(out).name)
    try:
        with atomic_path(out) as tmp:
            onnx.save(proto, str(tmp))
    except OSError as e:
        raise FmnistError(f"cannot write {out}: {e.strerror}") from None
    description = {"format": description["format"], "file": out.name, "sha256": sha256_of(out)} | description
    try:
        write_json(sidecar_path(out), description)
    except OSError as e:
        out.unlink(missing_ok=True)  # no model without its description
        raise FmnistError(f"cannot write {sidecar_path(out)}: {e.strerror}") from None
    return description


def export_int8(
    run_dir: Path,
    out: Path | None = None,
    data: FashionMNIST | None = None,
    data_dir: str | None = None,
    verify: bool | None = None,
) -> dict:
    """Write RUN_DIR's tested model statically quantised to int8 (default RUN_DIR/model.int8.onnx),
    with its description beside it; returns the description. The float graph passes the export's
    checks first; the int8 one is calibrated on training-split images, its method chosen on
    validation accuracy, and refused (nothing written) where it loses more than half a point there."""
    import onnx

    from fmnist.inference import quantize as q

    run = RunFolder(run_dir).require()
    out = Path(out) if out is not None else run.export_path().with_suffix(".int8.onnx")
    check_out(run, out)
    f = float_export(run, data, data_dir, verify)
    cfg, data, proto, meta = f.cfg, f.data, f.proto, dict(f.meta)
    train_idx, val_idx = split_of(data.train_labels, cfg)
    if not len(val_idx):
        raise q.QuantizeError(f"{run.path} has no validation split to choose the int8 calibration on")
    chosen = q.best_int8(
        proto,
        q.calibration_images(data.train_images, torch.as_tensor(train_idx), cfg.seed),
        data.train_images[val_idx],
        data.train_labels[val_idx],
    )
    int8 = chosen["model"]
    checks = q.check_int8(int8, proto, data.test_images)
    int8_info = {
        "format": "QDQ: int8 weights per channel (7 bits used), uint8 activations per tensor",
        "calibration_method": chosen["method"],
        "calibration_images": f"{min(q.CALIBRATION_IMAGES, len(train_idx))} of the training split (seed {cfg.seed})",
        "val_accuracy_by_method": chosen["tried"],
        "methods_failed": chosen["failed"],
        "val_accuracy": chosen["val_accuracy"],
        "float_val_accuracy": chosen["float_val_accuracy"],
        "test_accuracy": q.accuracy(q.make_session(int8), data.test_images, data.test_labels),
        "float_test_accuracy": q.accuracy(q.make_session(proto), data.test_images, data.test_labels),
        "max_val_loss": q.MAX_LOSS,
    }
    meta["int8"] = int8_info
    onnx.helper.set_model_props(int8, {META_PREFIX + k: json.dumps(v) for k, v in meta.items()})
    description = describe(int8, meta["tta"], meta["source"], checks) | {
        "calibration": meta["calibration"],
        "int8": int8_info,
    }
    return write_export(run, out, int8, description)


def source_of(run: RunFolder, model, cfg, metrics: dict) -> dict:
    """Where an exported file came from: the run, its checkpoint and its figures."""
    return {
        "run": str(run.path),
        "checkpoint": BEST,
        "checkpoint_sha256": sha256_of(run.file(BEST)),
        "model": cfg.model,
        "parameters": count_params(model),
        "test_accuracy": metrics.get("test_accuracy"),
        "best_epoch": metrics.get("best_epoch"),
    }


def calibration_of(metrics: dict) -> dict:
    """What an exported file says of its calibration: the graph answers raw logits, as /infer does."""
    cal = metrics.get("calibration") or {}
    return {
        "temperature": cal.get("temperature", 1.0),
        "use": "softmax(logits / temperature): the calibrated probabilities (fitted on the validation split)",
        "ece_before": cal.get("ece_before"),
        "ece_after": cal.get("ece_after"),
    }


def describe(proto, tta: dict, source: dict, checks: dict) -> dict:
    """The JSON description written beside an exported file (write_export adds its name and digest)."""
    import onnx
    import onnxscript

    return {
        "format": FORMAT,
        "classes": list(CLASSES),
        "input": {"name": INPUT, "shape": ["batch", 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0]},
        "output": {
            "name": OUTPUT,
            "shape": ["batch", 10],
            "dtype": "float32",
            "meaning": "logits (their softmax gives the probabilities)",
        },
        "preprocessing": PREPROCESSING,
        "test_time_augmentation": tta,
        "source": source,
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "versions": {
            "fmnist": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
        },
        "checks": checks,
    }
