"""ONNX Runtime backend (CPU by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from sdopt.contract.engine_messages import engine_message
from sdopt.contract.errors import SdoptError

# ONNX Runtime converts signed-int8 Q/DQ to unsigned before fusing integer kernels. On x86 CPUs
# without VNNI its u8 x s8 kernels add pairs of products in 16 bits, which saturate for 8-bit
# weights (10 % output error seen on a conv stack); weights in the reduced 7-bit range cannot
# saturate. Where neither holds, the conversion is switched off: exact, but not fused.
EXACT_INT8_OPTIONS = ["QDQS8ToU8Transformer"]


def cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def integer_kernels_are_exact(int8_weight_bits: int | None) -> bool:
    return int8_weight_bits is None or int8_weight_bits <= 7 or cpu_has_vnni()


# ONNX Runtime's type strings -> numpy dtype names (as the manifest records them)
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
           "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


RUN_OPTIONS = ort.RunOptions()
RUN_OPTIONS.log_severity_level = 4


class OrtModel:
    def __init__(self, path: Path, providers: list[str] | None = None, threads: int = 0,
                 int8_weight_bits: int | None = None, io_names: tuple | None = None, model_bytes: bytes | None = None):
        """`model_bytes`: the graph at `path` as already read (and verified); the engine takes them instead of
        reading the file again."""
        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: its errors come back as exceptions, said in one line
        if threads:
            options.intra_op_num_threads = threads
        disabled = [] if integer_kernels_are_exact(int8_weight_bits) else EXACT_INT8_OPTIONS
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path) if model_bytes is None else model_bytes, options, providers=providers or ["CPUExecutionProvider"],
                                                disabled_optimizers=disabled)
        except Exception as err:  # onnxruntime raises its own exception types for broken graphs
            raise SdoptError(f"{path}: ONNX Runtime cannot load it ({engine_message(err)})") from err
        self.inputs = {i.name: (_DTYPES.get(i.type, i.type), len(i.shape)) for i in self.session.get_inputs()}
        self.outputs = {o.name: (_DTYPES.get(o.type, o.type), len(o.shape)) for o in self.session.get_outputs()}
        self.input_names, self.output_names = list(self.inputs), list(self.outputs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs}, RUN_OPTIONS)
        except Exception as err:  # e.g. an allocation failure or a shape the graph refuses
            raise SdoptError(f"{self.path}: ONNX Runtime failed to run it ({engine_message(err)})") from err
        return dict(zip(self.output_names, outputs))
