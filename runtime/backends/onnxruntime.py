"""ONNX Runtime backend (CPU by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from sdopt.errors import SdoptError


# ONNX Runtime rewrites signed-int8 Q/DQ to unsigned before fusing integer kernels; on this
# CPU family the resulting u8 x s8 kernels can saturate and gave 8 % output error on a UNet's
# attention projections. Keeping the graph's own signed int8 is exact.
DISABLED_OPTIMIZERS = ["QDQS8ToU8Transformer"]


class OrtModel:
    def __init__(self, path: Path, providers: list[str] | None = None, threads: int = 0):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"],
                                                disabled_optimizers=DISABLED_OPTIMIZERS)
        except Exception as err:  # onnxruntime raises its own exception types for broken graphs
            raise SdoptError(f"{path}: ONNX Runtime cannot load it ({err})") from err
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})
        return dict(zip(self.output_names, outputs))
