"""One loader for every model fmnist can answer with: a run folder through PyTorch or through ONNX
Runtime, or an exported .onnx file. `predict`, `evaluate`, `serve` and `bench` all use it, so each
gives the same answers for the same model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fmnist.data import CLASSES
from fmnist.errors import FmnistError, UsageError
from fmnist.files import read_json
from fmnist.models import count_params
from fmnist.models.forward import predict_logits
from fmnist.run.folder import BEST, METRICS, RunFolder
from fmnist.training.config import TrainConfig

BACKENDS = ("torch", "onnx", "openvino")
# The default is the backend that predicted faster in `fmnist bench --backend torch,onnx` for
# every model measured (BENCHMARKS.md, "Inference: PyTorch or ONNX Runtime").
DEFAULT_BACKEND = "onnx"


@dataclass
class Predictor:
    """A model ready to answer: images (N, 1, 28, 28) in [0, 1] in, logits (N, 10) out."""

    name: str  # the run folder's or the file's name
    source: str  # the path it was loaded from
    backend: str
    logits: Callable[[torch.Tensor], torch.Tensor]
    info: dict = field(default_factory=dict)  # model, parameters, test_accuracy, tta
    temperature: float = 1.0  # fitted on the run's validation split; the logits stay raw
    proto: object = None  # the ONNX model an "onnx" predictor runs (a server's other processes load it)
    module: nn.Module | None = None  # the network a "torch" predictor runs, with its config (the same)
    config: TrainConfig | None = None

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.calibrated(self.logits(images))

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities from this model's raw logits."""
        return (logits / self.temperature).softmax(1)


def check_backend(name: str | None) -> str:
    name = name or DEFAULT_BACKEND
    if name not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def onnx_predictor(proto, name: str, source: str, info: dict, threads: int | None = None) -> Predictor:
    """A predictor running the ONNX model `proto` through ONNX Runtime (`threads` per call: all
    this process's cores by default)."""
    from fmnist.inference.onnx_runtime import make_session, run_session

    session = make_session(proto, threads, name=source)  # made (and its graph optimised) once, used for every call
    return Predictor(name, source, "onnx", lambda images: run_session(session, images, name=source), info, proto=proto)


def openvino_predictor(
    proto, name: str, source: str, info: dict, hint: str = "LATENCY", threads: int | None = None
) -> Predictor:
    """A predictor running the ONNX model `proto` through OpenVINO's CPU plugin, compiled once for its
    use: LATENCY (one stream with every thread: requests of a few images, as `predict` and `serve`
    send) or THROUGHPUT (several streams, a large set's chunks answered at once: `evaluate`)."""
    try:
        import openvino as ov
    except ImportError:
        raise FmnistError("--backend openvino needs OpenVINO: pip install 'fmnist[openvino]'") from None
    from fmnist.device import cores

    try:
        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(proto.SerializeToString()),
            "CPU",
            {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads or cores()},
        )
    except Exception as e:  # OpenVINO's own error types: a graph its CPU plugin cannot run
        raise FmnistError(f"OpenVINO cannot run {source}: {str(e).strip().splitlines()[0]}") from None
    request = compiled.create_infer_request()
    jobs = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    pool = ov.AsyncInferQueue(compiled, jobs) if jobs > 1 else None

    def logits(images: torch.Tensor, step: int = 256) -> torch.Tensor:
        x = np.ascontiguousarray(images.cpu().numpy(), np.float32)
        if pool is None or len(x) <= step:
            return torch.from_numpy(request.infer({0: x})[0].copy())  # the request reuses its buffer
        out = [None] * -(-len(x) // step)
        pool.set_callback(lambda r, i: out.__setitem__(i, r.get_output_tensor(0).data.copy()))
        for i in range(len(out)):
            pool.start_async({0: x[i * step : (i + 1) * step]}, i)
        pool.wait_all()
        return torch.from_numpy(np.concatenate(out))

    return Predictor(name, source, "openvino", logits, info, proto=proto)


def runtime_predictor(
    proto, backend: str, name: str, source: str, info: dict, threads: int | None = None, hint: str = "LATENCY"
) -> Predictor:
    """An ONNX model through ONNX Runtime or OpenVINO."""
    if backend == "openvino":
        return openvino_predictor(proto, name, source, info, hint, threads)
    return onnx_predictor(proto, name, source, info, threads)


def load_onnx_file(path: Path, backend: str = "onnx", hint: str = "LATENCY") -> Predictor:
    from fmnist.inference.onnx_runtime import metadata, read_model

    proto = read_model(path)
    meta = metadata(proto)
    source = meta.get("source", {}) if isinstance(meta.get("source"), dict) else {}
    classes = meta.get("classes")
    if classes is not None and list(classes) != list(CLASSES):
        raise FmnistError(f"{path}: its classes {classes} are not Fashion-MNIST's")
    info = {
        "model": source.get("model", "onnx"),
        "parameters": source.get("parameters"),
        "test_accuracy": source.get("test_accuracy"),
        "tta": meta.get("tta"),
    }
    predictor = runtime_predictor(proto, backend, path.stem, str(path), info, hint=hint)
    predictor.temperature = temperature_of(meta.get("calibration"), path)
    return predictor


def temperature_of(calibration, source) -> float:
    """The temperature a run's metrics or an exported file states (1 where none was fitted)."""
    if calibration is None:
        return 1.0
    t = calibration.get("temperature") if isinstance(calibration, dict) else None
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t < float("inf"):
        raise FmnistError(f"{source}: its calibration temperature {t!r} is not a positive number")
    return float(t)


def model_predictor(
    model: nn.Module,
    cfg: TrainConfig,
    backend: str,
    name: str,
    source: str,
    info: dict | None = None,
    hint: str = "LATENCY",
) -> Predictor:
    """A loaded model as it is tested (its config's test-time views), through `backend`; through
    ONNX Runtime it is exported in memory first."""
    info = info if info is not None else {}
    if backend == "torch":
        return Predictor(
            name,
            source,
            "torch",
            lambda images: predict_logits(model, images, tta=cfg.tta, tta_shift=cfg.tta_shift),
            info,
            module=model,
            config=cfg,
        )
    from fmnist.inference.onnx_export import to_onnx

    return runtime_predictor(to_onnx(copy.deepcopy(model), cfg, {}), backend, name, source, info, hint=hint)


def load_run(run_dir: Path, backend: str, hint: str = "LATENCY") -> Predictor:
    run = RunFolder(run_dir).require()
    model, cfg, _ = run.load_model()
    metrics = run.metrics() or {}
    info = {
        "model": cfg.model,
        "parameters": count_params(model),
        "test_accuracy": metrics.get("test_accuracy"),
        "tta": {"flip": cfg.tta, "shift": cfg.tta_shift},
    }
    exported = run.export_path()
    if backend != "torch" and exported.is_file() and _exported_from_best(run, exported):
        from fmnist.inference.onnx_runtime import read_model

        predictor = runtime_predictor(read_model(exported), backend, run.path.name, str(run.path), info, hint=hint)
    else:
        predictor = model_predictor(model, cfg, backend, run.path.name, str(run.path), info, hint)
    predictor.temperature = temperature_of(metrics.get("calibration"), run.file(METRICS))
    return predictor


def _exported_from_best(run: RunFolder, exported: Path) -> bool:
    from fmnist.inference.onnx_export import sha256_of, sidecar_path

    try:
        description = read_json(sidecar_path(exported))
        return description["sha256"] == sha256_of(exported) and description["source"]["checkpoint_sha256"] == sha256_of(
            run.file(BEST)
        )
    except (FmnistError, KeyError, TypeError, OSError):
        return False


def load_predictor(path: Path | str, backend: str | None = None, hint: str = "LATENCY") -> Predictor:
    """A run folder (through `backend`, the faster one by default) or an exported .onnx file
    (through ONNX Runtime, or OpenVINO where `backend` says so; `hint` is OpenVINO's use, LATENCY
    or THROUGHPUT)."""
    path = Path(path)
    if path.is_dir():
        return load_run(path, check_backend(backend), hint)
    if path.is_file() and path.suffix != ".onnx" and (path.parent / "config.json").is_file():
        raise FmnistError(f"{path} is a file of the run folder {path.parent}: give the folder itself")
    if path.is_file() and path.suffix.lower() != ".onnx":
        try:
            return load_onnx_file(path, "openvino" if backend == "openvino" else "onnx", hint)
        except FmnistError:  # an image or some other file given where the run goes
            raise FmnistError(f"{path} is neither a run folder nor an ONNX model") from None
    if path.is_file():
        return load_onnx_file(path, "openvino" if backend == "openvino" else "onnx", hint)
    raise FmnistError(f"{path} does not exist (give a run folder or an .onnx file)")
