"""An fmnist model in Triton's Python backend: the ONNX file beside this one, run by ONNX Runtime.

`fmnist export --format triton --triton-backend python` copies this file as NAME/1/model.py. It
needs only NumPy and ONNX Runtime where the backend runs, not fmnist: the repository is served alike
by the PyPI `tritonserver` (through `fmnist serve --engine triton`) and by Triton's own container.
Every request the dynamic batcher hands over is answered by one ONNX Runtime call.
"""

import ctypes
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The stub marks a DLPack capsule it consumed "used_dlpack"; NumPy's capsule destructor knows only the
# standard "used_dltensor" and prints a ValueError per response. The name is set to the standard one.
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _tensor(name, array):
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, b"used_dltensor")
    return tensor


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0")
        options.intra_op_num_threads = int(threads or 0)  # 0: ONNX Runtime's choice, one per core
        options.inter_op_num_threads = 1
        # A spinning thread pool slows the server's own threads between requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    def execute(self, requests):
        arrays = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, "images")) for r in requests]
        try:
            logits = self.session.run(None, {self.input: np.ascontiguousarray(np.concatenate(arrays), np.float32)})[0]
        except Exception as e:  # one bad batch answers its requests with the error, the model stays up
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e).splitlines()[0])) for _ in requests]
        responses, start = [], 0
        for a in arrays:
            # Tensors in and out through DLPack, not as_numpy() and Tensor(name, array): the PyPI
            # wheel's stub, built against NumPy 1, reads zeros from a NumPy 2 input and sends an empty
            # output (Triton: "output tensor shape does not match size of output"); DLPack hands the
            # buffers over on either NumPy.
            responses.append(pb_utils.InferenceResponse([_tensor("logits", logits[start : start + len(a)])]))
            start += len(a)
        return responses
