"""int8: a run's exported graph statically quantised by ONNX Runtime, kept only if it validates.

QDQ format (QuantizeLinear/DequantizeLinear pairs, which every runtime reads), weights quantised per
output channel to int8, activations per tensor to uint8 (the pairing ONNX Runtime's x86 kernels are
fastest with). The weights keep 7 bits: x86 CPUs without VNNI multiply uint8 by int8 in pairs summed
into int16, which saturates with full 8-bit weights (the study's deep_cnn lost 0.75 points of
validation accuracy so on an AVX2 machine, 0.17 with 7 bits), and a file must answer alike on every
CPU. The activations' ranges are calibrated on images of the run's own training split: never
validation (it chooses the method) nor test (it reports). Each calibration method is tried and the
one with the best validation accuracy kept; a model that loses more than MAX_LOSS of validation
accuracy to the float graph is refused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from fmnist.errors import FmnistError
from fmnist.inference.onnx_runtime import INPUT, make_session, run_session

METHODS = ("MinMax", "Entropy", "Percentile")  # ONNX Runtime's CalibrationMethod names, tried in this order
CALIBRATION_IMAGES = 512  # training-split images whose activations set the ranges
MAX_LOSS = 0.005  # validation accuracy the int8 model may lose to the float one (half a point)


class QuantizeError(FmnistError):
    """The int8 model was not good enough, or could not be made; nothing is written."""


def calibration_images(train_images: torch.Tensor, train_idx: torch.Tensor, seed: int) -> torch.Tensor:
    """CALIBRATION_IMAGES images of the training split, drawn by the run's seed, class order mixed."""
    g = torch.Generator().manual_seed(seed)
    pick = train_idx[torch.randperm(len(train_idx), generator=g)[:CALIBRATION_IMAGES]]
    return train_images[pick]


def quantize(proto, calibration: torch.Tensor, method: str):
    """The int8 (QDQ) model of the float ONNX model `proto`, its ranges calibrated on `calibration`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = _Reader(calibration)
    with tempfile.TemporaryDirectory(prefix="fmnist-int8-") as tmp, _quiet():
        float_path, pre_path, out_path = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, str(float_path))
        try:
            quant_pre_process(str(float_path), str(pre_path), skip_symbolic_shape=True)
            quantize_static(
                str(pre_path),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, method),
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        except Exception as e:  # the quantiser raises many types; its first line says what failed
            raise QuantizeError(f"ONNX Runtime could not quantise the model ({method}): {_first_line(e)}") from None
        return onnx.load(str(out_path))


@contextlib.contextmanager
def _quiet():
    """The quantiser prints its progress and logs advice on the root logger: the export reports instead."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class _Reader:
    """ONNX Runtime's CalibrationDataReader: batches of images under the graph's input name."""

    def __init__(self, images: torch.Tensor, batch: int = 64):
        # Batches of one size: the histogram methods cannot stack a short last batch with the others.
        batch = max(1, min(batch, len(images)))
        whole = len(images) - len(images) % batch
        self.batches = [images[i : i + batch].numpy().astype(np.float32) for i in range(0, whole, batch)]
        self.rewind()

    def get_next(self) -> dict | None:
        return {INPUT: self.batches[self.at - 1]} if self._step() else None

    def _step(self) -> bool:
        self.at += 1
        return self.at <= len(self.batches)

    def rewind(self) -> None:
        self.at = 0


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def accuracy(session, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (run_session(session, images).argmax(1) == labels).float().mean().item()


def best_int8(proto, calibration: torch.Tensor, val_images: torch.Tensor, val_labels: torch.Tensor) -> dict:
    """Every calibration method tried on the float model `proto`; the one of best validation accuracy
    (the earlier in METHODS on a tie) with its figures, or QuantizeError where it loses more than MAX_LOSS."""
    float_val = accuracy(make_session(proto), val_images, val_labels)
    tried, failed = {}, {}
    best = None
    for method in METHODS:
        try:
            model = quantize(proto, calibration, method)
        except QuantizeError as e:  # one method's failure leaves the others to choose from
            failed[method] = str(e)
            continue
        val = accuracy(make_session(model, name=f"the int8 model ({method})"), val_images, val_labels)
        tried[method] = val
        if best is None or val > best[1]:
            best = (method, val, model)
    if best is None:
        raise QuantizeError(next(iter(failed.values())))
    method, val, model = best
    if float_val - val > MAX_LOSS:
        raise QuantizeError(
            f"int8 loses {100 * (float_val - val):.2f} points of validation accuracy (float {float_val:.4f}, "
            f"int8 {val:.4f} with {method}, the best of {', '.join(METHODS)}): more than "
            f"{100 * MAX_LOSS:g}; nothing written"
        )
    return {
        "model": model,
        "method": method,
        "val_accuracy": val,
        "float_val_accuracy": float_val,
        "tried": tried,
        "failed": failed,
    }


def check_int8(int8, proto, images: torch.Tensor) -> dict:
    """The int8 model's checks: onnx's full checker, and finite answers from ONNX Runtime on real test
    images at the export's batch sizes; returns how often it predicts the float model's class there."""
    import onnx

    from fmnist.inference.onnx_export import CHECK_BATCHES

    try:
        onnx.checker.check_model(int8, full_check=True)
    except Exception as e:
        raise QuantizeError(f"check failed: onnx.checker on the int8 model: {_first_line(e)}") from None
    ours, theirs = make_session(int8, name="the int8 model"), make_session(proto)
    agreement = {}
    for n in CHECK_BATCHES:
        x = images[torch.arange(n) % len(images)]
        a, b = run_session(ours, x), run_session(theirs, x)
        if not torch.isfinite(a).all():
            raise QuantizeError(f"check failed: at batch {n} the int8 model answers NaN or infinite logits")
        agreement[str(n)] = (a.argmax(1) == b.argmax(1)).float().mean().item()
    return {"onnx_checker": "full check passed", "agreement_with_float": agreement}
