"""A model as an ONNX graph that ONNX Runtime runs with the same answers, and the checks it must pass.

The exported graph is the checkpoint the run's test figure came from, in eval mode, with the run's
test-time augmentation inside it: input `images` [batch, 1, 28, 28] float32 in [0, 1], output
`logits` [batch, 10]. Before anything is written it must pass three checks: onnx's full checker, no
BatchNorm left in training mode, and ONNX Runtime's logits against PyTorch's on real test images.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from fmnist.errors import FmnistError
from fmnist.inference.onnx_runtime import INPUT, META_PREFIX, OUTPUT, make_session, run_session
from fmnist.models.forward import Averaged, predict_logits
from fmnist.training.config import TrainConfig

FORMAT = "fmnist-onnx-1"
CHECK_BATCHES = (1, 7, 256)
TOLERANCE = 1e-4  # largest absolute difference of a logit between ONNX Runtime and PyTorch
PREPROCESSING = (
    "grey levels in [0, 1]; inverted if the background is light, so the object is light "
    "on black; background level subtracted, stretched to the full range; cropped to the "
    "object; fitted into 28×28 with its aspect ratio kept and centred (what `fmnist predict` "
    "and `fmnist serve` do: fmnist.data.images.to_fashion_mnist)"
)


class ExportError(FmnistError):
    """A check the exported model failed; nothing is written."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs its progress and version warnings; the export's own checks report instead."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.__trace", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def to_onnx(model: torch.nn.Module, cfg: TrainConfig, meta: dict) -> onnx.ModelProto:  # noqa: F821
    """The ONNX graph of `model` as the run tests it (eval mode, with its test-time views), with a
    dynamic batch dimension and fmnist's metadata."""
    import onnx

    tested = Averaged(model.cpu().to(memory_format=torch.contiguous_format), cfg.tta, cfg.tta_shift).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                tested,
                (torch.rand(2, 1, 28, 28),),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=[INPUT],
                output_names=[OUTPUT],
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; the first line says what failed
        raise ExportError(f"the exporter failed on {cfg.model}: {str(e).strip().splitlines()[0]}") from None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {META_PREFIX + k: json.dumps(v) for k, v in meta.items()})
    return proto


def check_exported(proto, model: torch.nn.Module, cfg: TrainConfig, images: torch.Tensor) -> dict:
    """The export's checks; raises ExportError naming the first that fails. Returns what they measured."""
    import onnx

    if any(m.training for m in model.modules()):
        raise ExportError("check failed: the model is in training mode (BatchNorm would use batch statistics)")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"check failed: onnx.checker: {str(e).strip().splitlines()[0]}") from None
    for node in proto.graph.node:
        training = any(a.name == "training_mode" and a.i for a in node.attribute)
        if node.op_type == "BatchNormalization" and (training or len(node.output) > 1):
            raise ExportError(f"check failed: BatchNormalization node {node.name!r} is in training mode")
    session = make_session(proto)
    diffs = {}
    for n in CHECK_BATCHES:
        x = images[torch.arange(n) % len(images)]  # real test images, repeated if there are fewer
        ours = run_session(session, x)
        theirs = predict_logits(model, x, tta=cfg.tta, tta_shift=cfg.tta_shift)
        diff = (ours - theirs).abs().max().item()
        diffs[str(n)] = diff
        if not diff <= TOLERANCE:
            raise ExportError(
                f"check failed: at batch {n} ONNX Runtime's logits differ from PyTorch's by "
                f"{diff:.2e} (more than {TOLERANCE:g})"
            )
        if not torch.equal(ours.argmax(1), theirs.argmax(1)):
            raise ExportError(f"check failed: at batch {n} ONNX Runtime and PyTorch predict different classes")
    return {"onnx_checker": "full check passed", "batchnorm": "inference mode", "max_abs_logit_difference": diffs}
