"""ONNX models: reading and checking a file, and running it with ONNX Runtime set up for this machine.

The runtime is configured once per session: one intra-op thread per core this process may use, no
spinning threads (a spinning ORT pool slows whatever else runs in the process, a web server or
PyTorch), and the graph optimised when the session is made, never per call.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fmnist.device import cores
from fmnist.errors import FmnistError

INPUT, OUTPUT = "images", "logits"
META_PREFIX = "fmnist."


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are not the user's to act on
    return options


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def read_model(source: Path | bytes, name: str = ""):
    """Parse and check an ONNX model: one float32 input [N, 1, 28, 28], one output [N, 10].
    Anything else is a one-line FmnistError saying what the file holds."""
    import onnx

    name = name or str(source)
    try:
        proto = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
    except FileNotFoundError:
        raise FmnistError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise FmnistError(f"{name}: is a folder, not an .onnx file") from None
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file, or cut short
        raise FmnistError(
            f"{name} is not a readable ONNX model (truncated or another format: {type(e).__name__})"
        ) from None
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise FmnistError(
            f"{name}: expected one input and one output, found {len(graph.input)} and {len(graph.output)}"
        )
    x, y = graph.input[0], graph.output[0]
    in_dims, out_dims = _dims(x), _dims(y)
    if x.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(in_dims) != 4 or in_dims[1:] != [1, 28, 28]:
        raise FmnistError(
            f"{name}: takes input {in_dims} of type "
            f"{onnx.TensorProto.DataType.Name(x.type.tensor_type.elem_type)}, "
            "not float32 [N, 1, 28, 28] images"
        )
    if len(out_dims) != 2 or out_dims[1] != 10:
        raise FmnistError(f"{name}: gives output {out_dims}, not [N, 10] logits of the 10 Fashion-MNIST classes")
    batch = fixed_batch(in_dims)
    if batch is not None and out_dims[0] != batch:  # a fixed batch must map image to row
        raise FmnistError(f"{name}: takes a fixed batch of {batch} images but gives output {out_dims}")
    return proto


def fixed_batch(dims: list) -> int | None:
    """The batch size a model's input is fixed to, or None where it is dynamic."""
    return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None


def metadata(proto) -> dict:
    """fmnist's own entries of the model's metadata, JSON-decoded."""
    out = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(META_PREFIX):
            try:
                out[prop.key[len(META_PREFIX) :]] = json.loads(prop.value)
            except json.JSONDecodeError:
                out[prop.key[len(META_PREFIX) :]] = prop.value
    return out


def make_session(proto, threads: int | None = None, name: str = "this model"):
    """An ONNX Runtime session of the model on the CPU."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            proto.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # a graph ORT cannot run (unknown operator, bad opset, ...)
        raise FmnistError(f"ONNX Runtime cannot run {name}: {str(e).splitlines()[0]}") from None


def run_session(session, images: torch.Tensor, batch_size: int = 1000, name: str = "this model") -> torch.Tensor:
    """Logits for every image, in batches; float32 on the CPU, like predict_logits. A model whose
    batch size is fixed runs at that size (the last batch padded with blank images, their rows
    dropped). ONNX Runtime's errors on a foreign model become one FmnistError."""
    first = session.get_inputs()[0]
    fixed = fixed_batch(list(first.shape))
    step = fixed or batch_size
    out = []
    for i in range(0, len(images), step):
        x = np.ascontiguousarray(images[i : i + step].cpu().numpy(), np.float32)
        n = len(x)
        if fixed and n < fixed:
            x = np.concatenate([x, np.zeros((fixed - n, *x.shape[1:]), np.float32)])
        try:
            out.append(session.run(None, {first.name: x})[0][:n])
        except Exception as e:  # onnxruntime's own error types: a graph that fails on these inputs
            raise FmnistError(f"ONNX Runtime failed on {name}: {str(e).strip().splitlines()[0]}") from None
    return torch.from_numpy(np.concatenate(out)) if out else torch.empty(0, 10)
