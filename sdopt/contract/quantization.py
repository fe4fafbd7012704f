"""What a quantizing pass hands to the exporter: per quantized layer its formats and scales, and where the
graph finds the timestep for interval scales. Plain data (numpy, ml_dtypes), so that `sdopt.compress`
(modelopt, torch) and `sdopt.export` (ONNX surgery) share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

INT8_MAX = 127


@dataclass(frozen=True)
class Format:
    name: str  # the ONNX element type, lower case
    dtype: type  # numpy dtype of the stored values
    max_bound: float  # scale = amax / max_bound
    opset: int  # lowest opset whose Q/DQ take this type

    def quantize(self, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        if self.dtype is ml_dtypes.float8_e4m3fn:  # round to nearest even, saturating as QuantizeLinear does
            return np.clip(x / scale, -self.max_bound, self.max_bound).astype(self.dtype)
        return np.clip(np.rint(x / scale), -self.max_bound - 1, self.max_bound).astype(self.dtype)


INT8 = Format("int8", np.int8, INT8_MAX, 13)
FP8 = Format("float8e4m3fn", ml_dtypes.float8_e4m3fn, 448.0, 19)
INT4 = Format("int4", ml_dtypes.int4, 7, 21)


def int_format(num_bits: int) -> Format:
    """int8 storage of a narrower range (7-bit weights lie in [-64, 63]); 4 bits are stored as int4."""
    if num_bits == 4:
        return INT4
    return Format("int8", np.int8, 2 ** (num_bits - 1) - 1, 13)


@dataclass(frozen=True)
class LayerQuant:
    module: str  # module path inside the UNet, e.g. "down_blocks.0.resnets.0.conv1"
    input_scale: float
    weight_scales: np.ndarray  # (out,), or with groups: (out, groups) for Linear, (out, groups, kh, kw) for Conv
    output_scale: float | None = None  # set when the layer's output is quantized too
    weight_format: Format = INT8
    activation_format: Format = INT8
    group_size: int | None = None  # input channels per weight scale (int4 groups)
    input_table: np.ndarray | None = None  # (K,) scales per timestep interval, replacing input_scale
    output_table: np.ndarray | None = None  # (K,) likewise for output_scale

    @property
    def weight_max(self) -> float:
        return self.weight_format.max_bound


@dataclass(frozen=True)
class IntervalIndex:
    """Where the graph finds the timestep to pick interval scales from."""

    timestep_input: str = "timestep"
    intervals: int = 1
    num_train_timesteps: int = 1000


@dataclass(frozen=True)
class GraphQuantization:
    """The quantized layers of one torch module (e.g. the UNet), for every graph exported from it; `trace`
    is a context manager factory under which the module computes in float (quantizers passing through)."""

    layers: list[LayerQuant]
    interval: IntervalIndex | None = None
    trace: object = None  # callable(module) -> context manager
    details: dict = field(default_factory=dict)  # recorded in the manifest beside each graph
