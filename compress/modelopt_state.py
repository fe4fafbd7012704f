"""Reading calibrated modelopt quantizers: which layers are quantized, in which formats and with which
scales (as `sdopt.contract.quantization.LayerQuant` for the exporter), and switching them off to trace the float graph.
"""

from __future__ import annotations

import contextlib

import numpy as np

from sdopt.contract.errors import SdoptError
from sdopt.contract.quantization import FP8, INT8_MAX, Format, LayerQuant, int_format

INTERVAL_TABLE = "_sdopt_interval_amax"  # per-interval ranges kept on an activation quantizer


def quantizer_format(quantizer) -> Format:
    return FP8 if tuple(np.atleast_1d(quantizer.num_bits)) == (4, 3) else int_format(int(quantizer.num_bits))


def collect_layers(model) -> list[LayerQuant]:
    layers = []
    for name, module in model.named_modules():
        if not is_quantized(module):
            continue
        wq, iq = module.weight_quantizer, module.input_quantizer
        if iq.amax is None or wq.amax is None:
            raise SdoptError(f"layer {name} was never calibrated (no calibration data reached it)")
        weight_format, activation_format = quantizer_format(wq), quantizer_format(iq)
        weight_scales, group_size = _weight_scales(module, weight_format)
        act_bound = activation_format.max_bound
        oq = getattr(module, "output_quantizer", None)
        output_scale = float(_scale(float(oq.amax.detach().float().reshape(())), act_bound)) \
            if oq is not None and oq.is_enabled and oq.amax is not None else None
        tables = [getattr(q, INTERVAL_TABLE, None) if q is not None else None for q in (iq, oq)]
        input_table, output_table = (None if t is None else _scale(t, act_bound) for t in tables)
        if output_table is not None and output_scale is None:
            raise SdoptError(f"layer {name}: interval output scales without an enabled output quantizer")
        layers.append(LayerQuant(name, float(_scale(float(iq.amax.detach().float().reshape(())), act_bound)),
                                 weight_scales, output_scale, weight_format, activation_format, group_size,
                                 input_table, output_table))
    return layers


def _weight_scales(module, fmt: Format) -> tuple[np.ndarray, int | None]:
    wq, weight = module.weight_quantizer, module.weight
    amax = wq.amax.detach().float().numpy()
    out_channels = weight.shape[0]
    block_sizes = getattr(wq, "block_sizes", None)
    if not block_sizes:
        return _scale(amax.reshape(-1), fmt.max_bound), None
    group = next(v for k, v in block_sizes.items() if isinstance(k, int) and v)
    groups = -(-weight.shape[1] // group)
    shape = (out_channels, groups, *weight.shape[2:])  # modelopt keeps one amax per group (and tap)
    return _scale(amax.reshape(shape), fmt.max_bound), group


def _scale(amax, max_bound: float = INT8_MAX):
    # modelopt clamps a zero range the same way: a channel of zeros must not divide by zero
    return np.maximum(np.asarray(amax, dtype=np.float32), 1e-8) / np.float32(max_bound)


@contextlib.contextmanager
def quantizers_disabled(module):
    """Trace the float graph of a fake-quant model: quantizers off, restored afterwards."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    enabled = [q for q in module.modules() if isinstance(q, TensorQuantizer) and q.is_enabled]
    for q in enabled:
        q.disable()
    try:
        yield module
    finally:
        for q in enabled:
            q.enable()


def is_quantized(module) -> bool:
    wq, iq = getattr(module, "weight_quantizer", None), getattr(module, "input_quantizer", None)
    return wq is not None and iq is not None and wq.is_enabled and iq.is_enabled


def quantized_layer_names(module) -> list[str]:
    return [name for name, m in module.named_modules() if is_quantized(m)]


def float_layer_names(module) -> list[str]:
    """Conv/Linear layers left in floating point (skipped)."""
    return [name for name, m in module.named_modules()
            if hasattr(m, "weight_quantizer") and not is_quantized(m)]


def has_quantizers(module) -> bool:
    return any(hasattr(m, "weight_quantizer") for m in module.modules())


def activation_quantizers(module) -> dict:
    """'<layer>.input_quantizer' / '<layer>.output_quantizer' -> enabled activation quantizer."""
    found = {}
    for name, layer in module.named_modules():
        if not is_quantized(layer):
            continue
        for kind in ("input_quantizer", "output_quantizer"):
            quantizer = getattr(layer, kind, None)
            if quantizer is not None and quantizer.is_enabled:
                found[f"{name}.{kind}"] = quantizer
    return found
