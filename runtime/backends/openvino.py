"""OpenVINO backend: the artifact's ONNX graphs compiled for a device (CPU by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdopt.errors import SdoptError

PRECISIONS = ("f32", "bf16", "f16")


class OvModel:
    def __init__(self, path: Path, device: str = "CPU", precision: str | None = None, threads: int = 0,
                 int8_weight_bits: int | None = None, ir_path: Path | None = None):
        """`path`: the ONNX graph; `ir_path`: its OpenVINO build (`sdopt build --format openvino`), compiled
        instead when given."""
        try:
            import openvino as ov
        except ImportError as err:
            raise SdoptError("the openvino backend needs the openvino package: pip install 'sdopt[openvino]'") from err
        if precision is not None and precision not in PRECISIONS:
            raise SdoptError(f"unknown OpenVINO precision '{precision}'; choose one of " + ", ".join(PRECISIONS))
        config = {}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        if device not in core.available_devices and device != "AUTO":
            raise SdoptError(f"OpenVINO device '{device}' is not available here; available: "
                             + ", ".join(core.available_devices))
        try:
            self.compiled = core.compile_model(str(ir_path or path), device, config)
        except RuntimeError as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SdoptError(f"{ir_path or path}: OpenVINO cannot compile it ({first_line})") from err
        self.request = self.compiled.create_infer_request()
        # a port can carry several tensor names (OpenVINO merges names through its graph rewrites): keep
        # the ONNX graph's own input / output names
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        self.input_names = [_onnx_name(port, {v.name for v in graph.input}) for port in self.compiled.inputs]
        self.output_names = [_onnx_name(port, {v.name for v in graph.output}) for port in self.compiled.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer({i: feeds[name] for i, name in enumerate(self.input_names) if name in feeds})
        return {name: np.array(results[port]) for name, port in zip(self.output_names, self.compiled.outputs)}


def _onnx_name(port, names: set[str]) -> str:
    found = sorted(port.get_names() & names)
    return found[0] if found else port.get_any_name()
