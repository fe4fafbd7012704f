"""Post-training quantization of the UNet with nvidia-modelopt (fake quant in torch).

`apply(source, config)` records calibration data along the fp32 pipeline's trajectories
(`sdopt.calibration`), inserts modelopt quantizers into the UNet's Conv2d/Linear layers and
calibrates them with a forward loop over those records. The exporter (`sdopt.export.qdq`) turns
the calibrated quantizers into standard Q/DQ nodes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from sdopt.calibration.statistics import Aggregation, RangeRecorder, interval_index
from sdopt.calibration.trajectory import CalibrationConfig, calibration_prompts, record_unet_inputs, select_calls
from sdopt.errors import SdoptError

# Layers that stay in floating point (as ModelOpt's diffusion recipe): the time embedding and its
# per-block projections see tiny, timestep-dependent inputs; the first and last convs and the
# 1x1 shortcut convs carry the signal where int8 error costs the most.
DEFAULT_SKIP = ("time_emb_proj", "time_embedding", "conv_in", "conv_out", "conv_shortcut", "add_embedding")
FORMATS = ("int8",)


@dataclass(frozen=True)
class QuantizeConfig:
    format: str = "int8"
    skip: tuple[str, ...] = DEFAULT_SKIP  # substrings of module names kept in floating point
    # Quantize convolution outputs too. ONNX Runtime runs a convolution as an integer kernel only
    # when its output is quantized as well; otherwise it dequantizes the weights on every call and
    # the INT8 graph is slower than fp32.
    conv_outputs: bool = True
    # Weights are int8 per output channel; 7 keeps them in [-64, 63] (ONNX Runtime's "reduce range"),
    # so its u8 x s8 integer kernels on x86 CPUs without VNNI (AVX2) cannot saturate their 16-bit
    # pair sums. Use 8 for CPUs with VNNI and for TensorRT.
    weight_bits: int = 7
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise SdoptError(f"unknown quantization format '{self.format}'; choose one of " + ", ".join(FORMATS))
        if self.weight_bits not in (7, 8):
            raise SdoptError(f"weight_bits {self.weight_bits}: int8 weights use 8 bits, or 7 (reduced range)")


def modelopt_config(config: QuantizeConfig) -> dict:
    quant_cfg = [
        {"quantizer_name": "*", "enable": False},
        # per-output-channel symmetric weights, per-tensor symmetric activations
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": config.weight_bits, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    ]
    if config.conv_outputs:
        quant_cfg.append({"quantizer_name": "*output_quantizer", "parent_class": "nn.Conv2d",
                          "cfg": {"num_bits": 8, "axis": None}})
    quant_cfg += [{"quantizer_name": f"*{pattern}*", "enable": False} for pattern in config.skip]
    return {"quant_cfg": quant_cfg, "algorithm": "max"}


def apply(source, config: QuantizeConfig):
    import modelopt.torch.quantization as mtq

    start = time.perf_counter()
    cal = config.calibration
    records = record_unet_inputs(source, cal)
    calls = select_calls(records, cal)
    recorded = time.perf_counter()
    unet = source.pipeline.unet
    recorders = []

    def forward_loop(model):
        recorder = RangeRecorder(activation_quantizers(model))
        with recorder:
            for inputs in tqdm(calls, desc="calibrating quantizers", unit="call"):
                recorder.start_call(float(inputs["timestep"][0]), int(inputs["step"]))
                run_unet(model, inputs)
        recorders.append(recorder)

    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):  # modelopt prints progress on stdout
        mtq.quantize(unet, modelopt_config(config), forward_loop)
    quantized = sorted(quantized_layer_names(unet))
    if not quantized:
        raise SdoptError("quantization matched no layer: check the skip patterns")
    stats = recorders[-1].statistics()
    aggregation = Aggregation(cal.aggregation, cal.percentile, cal.fraction)
    num_train_timesteps = int(source.pipeline.scheduler.config.num_train_timesteps)
    if cal.intervals > 1:
        set_interval_ranges(unet, stats.interval_ranges(aggregation, cal.intervals, num_train_timesteps),
                            num_train_timesteps)
    else:
        set_ranges(unet, stats.aggregate(aggregation))
    source.records.append({
        "pass": "quantize",
        "format": config.format,
        "calibration_prompts": calibration_prompts(source, cal),
        "calibration_unet_calls": len(calls),
        "recorded_unet_calls": len(records),
        "sampling": cal.sampling,
        "aggregation": cal.aggregation,
        "activation_scales": f"{cal.intervals} timestep intervals" if cal.intervals > 1 else "one per tensor",
        "quantized_layers": len(quantized),
        "float_layers": sorted(float_layer_names(unet)),
        "seconds": {"record": round(recorded - start, 2), "calibrate": round(time.perf_counter() - recorded, 2)},
    })
    return source


def run_unet(unet, inputs: dict):
    added = {k: inputs[k] for k in ("text_embeds", "time_ids") if k in inputs} or None
    return unet(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["encoder_hidden_states"],
                added_cond_kwargs=added, return_dict=False)[0]


def activation_quantizers(unet) -> dict:
    """'<layer>.input_quantizer' / '<layer>.output_quantizer' -> enabled activation quantizer."""
    found = {}
    for name, module in unet.named_modules():
        if not is_quantized(module):
            continue
        for kind in ("input_quantizer", "output_quantizer"):
            quantizer = getattr(module, kind, None)
            if quantizer is not None and quantizer.is_enabled:
                found[f"{name}.{kind}"] = quantizer
    return found


def set_ranges(unet, ranges: dict[str, float]) -> None:
    quantizers = activation_quantizers(unet)
    for name, value in ranges.items():
        if not np.isfinite(value):
            raise SdoptError(f"{name} was never reached by the calibration calls")
        quantizers[name].amax = torch.tensor(value, dtype=torch.float32)


INTERVAL_TABLE = "_sdopt_interval_amax"


def set_interval_ranges(unet, tables: dict[str, np.ndarray], num_train_timesteps: int) -> None:
    """Per-interval ranges: kept on each quantizer (the exporter writes them as a table indexed by the
    timestep), and a forward pre-hook on the UNet switches the fake-quant ranges to the timestep's
    interval, so the torch model computes what the exported graph does."""
    quantizers = activation_quantizers(unet)
    for name, table in tables.items():
        if not np.isfinite(table).all():
            raise SdoptError(f"{name} was never reached by the calibration calls")
        setattr(quantizers[name], INTERVAL_TABLE, table.astype(np.float32))
    intervals = len(next(iter(tables.values())))
    ranges = [(quantizers[name], torch.from_numpy(table.astype(np.float32))) for name, table in tables.items()]

    def select(_module, args, kwargs):
        if torch.jit.is_tracing():  # the exporter traces the float graph and adds the tables itself
            return
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        k = int(interval_index(torch.as_tensor(timestep).reshape(-1)[:1].float().numpy(), intervals,
                               num_train_timesteps)[0])
        for quantizer, table in ranges:
            quantizer.amax = table[k]

    unet.register_forward_pre_hook(select, with_kwargs=True)


def quantized_layer_names(unet) -> list[str]:
    return [name for name, m in unet.named_modules() if is_quantized(m)]


def float_layer_names(unet) -> list[str]:
    """Conv/Linear layers left in floating point (skipped)."""
    return [name for name, m in unet.named_modules()
            if hasattr(m, "weight_quantizer") and not is_quantized(m)]


def is_quantized(module) -> bool:
    wq, iq = getattr(module, "weight_quantizer", None), getattr(module, "input_quantizer", None)
    return wq is not None and iq is not None and wq.is_enabled and iq.is_enabled

