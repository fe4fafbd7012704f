"""OpenVINO backend: the artifact's ONNX graphs compiled for a device (CPU by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdopt.contract.engine_messages import engine_message
from sdopt.contract.errors import SdoptError

PRECISIONS = ("fp32", "bf16", "fp16")  # spelled as sdopt spells precisions elsewhere (--recipe fp32)
OPENVINO_SPELLING = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # INFERENCE_PRECISION_HINT's values
ALIASES = {"f32": "fp32", "f16": "fp16"}  # OpenVINO's spellings, still taken


def precision_name(text: str) -> str:
    return ALIASES.get(text, text)


class OvModel:
    def __init__(self, path: Path, device: str = "CPU", precision: str | None = None, threads: int = 0,
                 int8_weight_bits: int | None = None, ir_path: Path | None = None, io_names: tuple | None = None):
        """`path`: the ONNX graph; `ir_path`: its OpenVINO build (`sdopt build --format openvino`), compiled
        instead when given; `io_names`: the graph's (input, output) names as the manifest lists them."""
        try:
            import openvino as ov
        except ImportError as err:
            raise SdoptError("the openvino backend needs the openvino package: pip install 'sdopt[openvino]'") from err
        if precision is not None and precision_name(precision) not in PRECISIONS:
            raise SdoptError(f"unknown OpenVINO precision '{precision}'; choose one of " + ", ".join(PRECISIONS))
        config = {}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = OPENVINO_SPELLING[precision_name(precision)]
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        if device not in core.available_devices and device != "AUTO":
            raise SdoptError(f"OpenVINO device '{device}' is not available here; available: "
                             + ", ".join(core.available_devices))
        self.path = Path(ir_path or path)
        try:
            self.compiled = core.compile_model(str(self.path), device, config)
        except Exception as err:  # OpenVINO raises RuntimeError and its own types
            raise SdoptError(f"{self.path}: OpenVINO cannot compile it ({engine_message(err)})") from err
        self.request = self.compiled.create_infer_request()
        # a port can carry several tensor names (OpenVINO merges names through its graph rewrites): keep
        # the graph's own input / output names
        inputs, outputs = io_names or ((), ())
        self.input_names = [_graph_name(port, set(inputs)) for port in self.compiled.inputs]
        self.output_names = [_graph_name(port, set(outputs)) for port in self.compiled.outputs]
        self.inputs = {name: _spec(port) for name, port in zip(self.input_names, self.compiled.inputs)}
        self.outputs = {name: _spec(port) for name, port in zip(self.output_names, self.compiled.outputs)}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.request.infer({i: feeds[name] for i, name in enumerate(self.input_names)
                                          if name in feeds})
        except Exception as err:
            raise SdoptError(f"{self.path}: OpenVINO failed to run it ({engine_message(err)})") from err
        return {name: np.array(results[port]) for name, port in zip(self.output_names, self.compiled.outputs)}


def _graph_name(port, names: set[str]) -> str:
    found = sorted(port.get_names() & names)
    return found[0] if found else port.get_any_name()


def _spec(port) -> tuple[str, int]:
    element = port.get_element_type()
    dtype = np.dtype(element.to_dtype()).name if element.is_static() else str(element)
    shape = port.get_partial_shape()
    return dtype, (shape.rank.get_length() if shape.rank.is_static else -1)
