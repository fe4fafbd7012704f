"""Post-training quantization of the denoiser with nvidia-modelopt (fake quant in torch).

`apply(source, config)` records calibration data along the fp32 pipeline's trajectories
(`sdopt.calibration`), inserts modelopt quantizers into the denoiser's Conv2d/Linear layers and
calibrates them with a forward loop over those records. The exporter (`sdopt.export.qdq`) turns
the calibrated quantizers into standard Q/DQ nodes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sdopt.backbones.registry import PASS_FAMILIES
from sdopt.calibration.statistics import AGGREGATIONS, Aggregation, RangeRecorder, StepStatistics, interval_index
from sdopt.calibration.trajectory import (
    SAMPLINGS,
    CalibrationConfig,
    calibration_prompts,
    check_calibration,
    select_calls,
)
from sdopt.compress.modelopt_state import (
    INTERVAL_TABLE,
    activation_quantizers,
    collect_layers,
    float_layer_names,
    quantized_layer_names,
    quantizers_disabled,
)
from sdopt.compress.registry import Shortcut, register
from sdopt.compress.trajectories import record_denoiser_calls
from sdopt.contract import argtypes
from sdopt.contract.errors import SdoptError
from sdopt.contract.quantization import GraphQuantization, IntervalIndex
from sdopt.contract.safe_io import read_prompts

FORMATS = ("int8", "fp8", "w4a8")


@dataclass(frozen=True)
class QuantizeConfig:
    """`int8`: W8A8, per-output-channel symmetric weights, per-tensor activations.
    `fp8`: E4M3 weights (per output channel) and activations (per tensor).
    `w4a8`: INT4 weights in groups of `group_size` input channels, AWQ-scaled (linear layers; modelopt's
    AWQ covers Linear only, convolutions keep max-calibrated groups), INT8 activations."""

    format: str = "int8"
    # substrings of module names kept in floating point (None: the backbone's own list; SD's and SDXL's:
    # conv_in, conv_out, conv_shortcut, add_embedding: where quantization error costs the most)
    skip: tuple[str, ...] | None = None
    # the time embedding and its per-block projections see tiny, timestep-dependent inputs (TFMQ-DM keeps them
    # in higher precision): "float" (skipped) or "quantized" in the recipe's format
    time_embedding: str = "float"
    # Quantize convolution outputs too (default: int8 only). ONNX Runtime runs a convolution as an
    # integer kernel only when its output is quantized as well; otherwise it dequantizes the weights
    # on every call and the INT8 graph is slower than fp32.
    conv_outputs: bool | None = None
    # int8 weights: 7 keeps them in [-64, 63] (ONNX Runtime's "reduce range"), so its u8 x s8 integer
    # kernels on x86 CPUs without VNNI (AVX2) cannot saturate their 16-bit pair sums. Use 8 for CPUs
    # with VNNI and for TensorRT.
    weight_bits: int = 7
    group_size: int = 128  # w4a8: input channels per INT4 weight scale
    awq: bool = True  # w4a8: AWQ (modelopt awq_lite) weight scaling of linear layers
    smoothquant: float | None = None  # int8: SmoothQuant alpha for linear layers (None: off)
    split_shortcuts: bool = False  # own activation scales for the two halves of concatenated skip inputs
    auto_skip: float | None = None  # keep the most sensitive layers in float until the output PSNR (dB) holds
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise SdoptError(f"unknown quantization format '{self.format}'; choose one of " + ", ".join(FORMATS))
        if self.weight_bits not in (7, 8):
            raise SdoptError(f"weight_bits {self.weight_bits}: int8 weights use 8 bits, or 7 (reduced range)")
        if self.time_embedding not in ("float", "quantized"):
            raise SdoptError(f"time_embedding '{self.time_embedding}': choose float or quantized")
        if self.group_size < 1:
            raise SdoptError(f"group_size must be >= 1, got {self.group_size}")
        if self.group_size > 1 << 16:
            raise SdoptError(f"group_size must be <= 65536, got {self.group_size}")
        if self.skip is not None and any(not pattern for pattern in self.skip):
            raise SdoptError("skip patterns must be non-empty")
        if self.auto_skip is not None and not 0 < self.auto_skip <= 200:
            raise SdoptError(f"auto_skip {self.auto_skip} dB must lie in (0, 200]")
        if self.smoothquant is not None:
            if not 0 <= self.smoothquant <= 1:
                raise SdoptError(f"SmoothQuant alpha must lie in [0, 1], got {self.smoothquant}")
            if self.format != "int8":
                raise SdoptError(f"SmoothQuant applies to int8 (modelopt smooths int8 layers only), not {self.format}")

    @property
    def quantize_conv_outputs(self) -> bool:
        return self.format == "int8" if self.conv_outputs is None else self.conv_outputs

    def skipped(self, backbone) -> tuple[str, ...]:
        """The name patterns kept in floating point on this backbone."""
        skip = backbone.quantization_skip if self.skip is None else self.skip
        return tuple(skip) + (tuple(backbone.time_embedding_layers) if self.time_embedding == "float" else ())


def modelopt_config(config: QuantizeConfig, backbone) -> dict:
    weight: list[dict] = {
        # modelopt smooths only 8-bit layers; the range is the same at 7 bits (set after calibration)
        "int8": [{"quantizer_name": "*weight_quantizer",
                  "cfg": {"num_bits": 8 if config.smoothquant is not None else config.weight_bits, "axis": 0}}],
        "fp8": [{"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": (4, 3), "axis": 0}}],
        # groups along the input channels: the last axis of a Linear weight, axis 1 of a Conv2d weight
        "w4a8": [{"quantizer_name": "*weight_quantizer",
                  "cfg": {"num_bits": 4, "block_sizes": {-1: config.group_size, "type": "static"}}},
                 {"quantizer_name": "*weight_quantizer", "parent_class": "nn.Conv2d",
                  "cfg": {"num_bits": 4, "block_sizes": {1: config.group_size, "type": "static"}}}],
    }[config.format]
    activation = {"num_bits": (4, 3) if config.format == "fp8" else 8, "axis": None}
    quant_cfg = [{"quantizer_name": "*", "enable": False}, *weight,
                 {"quantizer_name": "*input_quantizer", "cfg": activation}]
    if config.quantize_conv_outputs:
        quant_cfg.append({"quantizer_name": "*output_quantizer", "parent_class": "nn.Conv2d", "cfg": activation})
    quant_cfg += [{"quantizer_name": f"*{pattern}*", "enable": False} for pattern in config.skipped(backbone)]
    if config.format == "w4a8" and config.awq:
        algorithm = {"method": "awq_lite", "alpha_step": 0.1}
    elif config.smoothquant is not None:
        algorithm = {"method": "smoothquant", "alpha": config.smoothquant}
    else:
        algorithm = "max"
    return {"quant_cfg": quant_cfg, "algorithm": algorithm}


def check(source, config: QuantizeConfig) -> None:
    backbone = source.backbone
    if backbone.takes_masked_image(source):
        raise SdoptError(f"the {backbone.family} denoiser takes {backbone.latent_channels_in(source.denoiser)} input "
                         f"channels (an inpainting model): calibrating it needs inpainting trajectories, which sdopt "
                         f"does not record yet")
    if config.split_shortcuts and getattr(backbone, "split_shortcuts", None) is None:
        raise SdoptError(f"quantize: split_shortcuts needs concatenated skip inputs, which a {backbone.family} "
                         f"denoiser does not have")
    check_calibration(source, config.calibration)


def apply(source, config: QuantizeConfig):
    import modelopt.torch.quantization as mtq

    start = time.perf_counter()
    cal = config.calibration
    backbone = source.backbone
    records = record_denoiser_calls(source, cal)
    span = backbone.timestep_range(source)
    calls = select_calls(records, cal, timestep=backbone.timestep_input, span=span)
    recorded = time.perf_counter()
    model = source.denoiser
    split = backbone.split_shortcuts(model, lambda m: backbone.call(m, calls[0])) if config.split_shortcuts else []
    skipped = config.skipped(backbone)
    if not any(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and not any(p in name for p in skipped)
               for name, m in model.named_modules()):
        raise SdoptError("quantization matched no layer: check the skip patterns")
    quant_config = modelopt_config(config, backbone)
    algorithm = quant_config["algorithm"] if isinstance(quant_config["algorithm"], str) \
        else quant_config["algorithm"]["method"]
    single_pass = algorithm == "max"
    statistics = []

    def forward_loop(calibrated):
        # Per-call ranges are recorded in modelopt's own pass when it makes exactly one (max); AWQ and
        # SmoothQuant make several and change the layers' input scaling, so they are recorded after.
        if single_pass:
            statistics.append(_record_calls(backbone, calibrated, calls, "calibrating quantizers"))
        else:
            for inputs in tqdm(calls, desc="calibrating quantizers", unit="call"):
                backbone.call(calibrated, inputs)

    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):  # modelopt prints progress on stdout
        mtq.quantize(model, quant_config, forward_loop)
    if config.format == "int8":
        for name in quantized_layer_names(model):
            model.get_submodule(name).weight_quantizer.num_bits = config.weight_bits
    stats = statistics[-1] if single_pass else record_ranges(backbone, model, calls)
    aggregation = Aggregation(cal.aggregation, cal.percentile, cal.fraction)
    if cal.intervals > 1:
        _check_intervals_reached(stats, cal.intervals, span, backbone)
        set_interval_ranges(backbone, model, stats.interval_ranges(aggregation, cal.intervals, span), span)
    else:
        set_ranges(model, stats.aggregate(aggregation))
    calibrated = time.perf_counter()
    sensitivity = None
    if config.auto_skip is not None:
        from sdopt.compress.sensitivity import keep_sensitive_layers_in_float

        sensitivity = keep_sensitive_layers_in_float(backbone, model, calls, config.auto_skip)
    layers = collect_layers(model)
    source.outputs.quantization[backbone.component] = GraphQuantization(
        layers, IntervalIndex(backbone.timestep_input, cal.intervals, span), trace=quantizers_disabled)
    source.outputs.records.append({
        "pass": "quantize",
        "format": config.format,
        "calibration_prompts": calibration_prompts(source, cal),
        f"calibration_{backbone.component}_calls": len(calls),
        f"recorded_{backbone.component}_calls": len(records),
        "sampling": cal.sampling,
        "aggregation": cal.aggregation,
        "activation_scales": f"{cal.intervals} timestep intervals" if cal.intervals > 1 else "one per tensor",
        "algorithm": algorithm,
        "split_convs": split,
        "quantized_layers": len(quantized_layer_names(model)),
        "float_layers": sorted(float_layer_names(model)),
        **({"sensitivity": sensitivity} if sensitivity is not None else {}),
        "seconds": {"record": round(recorded - start, 2), "calibrate": round(calibrated - recorded, 2),
                    **({"sensitivity": round(time.perf_counter() - calibrated, 2)} if sensitivity is not None else {})},
    })
    return source


def record_ranges(backbone, model, calls: list[dict]) -> StepStatistics:
    """Per-call activation ranges of the calibrated model, its quantizers passing values through."""
    with torch.no_grad(), quantizers_disabled(model):
        return _record_calls(backbone, model, calls, "recording activation ranges")


def _record_calls(backbone, model, calls: list[dict], description: str) -> StepStatistics:
    with RangeRecorder(activation_quantizers(model)) as recorder:
        for inputs in tqdm(calls, desc=description, unit="call"):
            recorder.start_call(float(inputs[backbone.timestep_input][0]), int(inputs["step"]))
            backbone.call(model, inputs)
    return recorder.statistics()


def _check_intervals_reached(stats: StepStatistics, intervals: int, span: float, backbone) -> None:
    """Calls spread over a trajectory fall into more than one interval; all in one means the timestep domain the
    backbone states is not the one its model is called with (t/1000 against a span of 1000, say)."""
    reached = np.unique(interval_index(stats.timesteps, intervals, span))
    if len(reached) == 1 and len(np.unique(stats.timesteps)) > 1:
        raise SdoptError(f"quantize: every calibration call fell into timestep interval {int(reached[0])} of "
                         f"{intervals}: the {backbone.family} denoiser's timesteps "
                         f"({float(np.min(stats.timesteps)):g} to {float(np.max(stats.timesteps)):g}) do not span "
                         f"its stated domain [0, {span:g})")


def set_ranges(model, ranges: dict[str, float]) -> None:
    quantizers = activation_quantizers(model)
    for name, value in ranges.items():
        if not np.isfinite(value):
            raise SdoptError(f"{name} was never reached by the calibration calls")
        quantizers[name].amax = torch.tensor(value, dtype=torch.float32)


def set_interval_ranges(backbone, model, tables: dict[str, np.ndarray], num_train_timesteps: int) -> None:
    """Per-interval ranges: kept on each quantizer (the exporter writes them as a table indexed by the
    timestep), and a forward pre-hook on the denoiser switches the fake-quant ranges to the timestep's
    interval, so the torch model computes what the exported graph does."""
    quantizers = activation_quantizers(model)
    for name, table in tables.items():
        if not np.isfinite(table).all():
            raise SdoptError(f"{name} was never reached by the calibration calls")
        setattr(quantizers[name], INTERVAL_TABLE, table.astype(np.float32))
    intervals = len(next(iter(tables.values())))
    ranges = [(quantizers[name], torch.from_numpy(table.astype(np.float32))) for name, table in tables.items()]

    def select(_module, args, kwargs):
        if torch.jit.is_tracing():  # the exporter traces the float graph and adds the tables itself
            return
        timestep = backbone.timestep_argument(args, kwargs)
        k = int(interval_index(torch.as_tensor(timestep).reshape(-1)[:1].float().numpy(), intervals,
                               num_train_timesteps)[0])
        for quantizer, table in ranges:
            quantizer.amax = table[k]

    model.register_forward_pre_hook(select, with_kwargs=True)


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.split(",") if p)


def _prompts_file(path: str) -> tuple[str, ...]:
    return tuple(read_prompts(Path(path), "--calib-prompts"))


def _flag(flag: str, key: str, help: str, convert=None, **argparse) -> Shortcut:
    return Shortcut(flag, key, {"help": help, **argparse}, convert)


SHORTCUTS = (
    _flag("--calib-prompts", "calibration.prompts", "text file, one calibration prompt per line (default: the "
          "model's built-in set)", _prompts_file, metavar="FILE"),
    _flag("--calib-num-prompts", "calibration.num_prompts", "number of calibration prompts to use (default 4)",
          type=argtypes.positive, metavar="N"),
    _flag("--calib-steps", "calibration.steps", "sampling steps per calibration trajectory (default: the model's, "
          "20 for most, 25 for tiny-shapes)", type=argtypes.steps, metavar="N"),
    _flag("--calib-size", "calibration.size", "calibration image size in pixels (default: the model's native size)",
          type=argtypes.image_side, metavar="PX"),
    _flag("--calib-sampling", "calibration.sampling", "which recorded steps calibrate: all (default), every k-th "
          "(--calib-every), normal around 0.4 T (PTQ4DM), random-step (the inputs of one random step: the naive "
          "baseline)", choices=SAMPLINGS),
    _flag("--calib-every", "calibration.every", "k for --calib-sampling every (default 2)", type=argtypes.positive,
          metavar="K"),
    _flag("--calib-aggregation", "calibration.aggregation", "per-step ranges -> one scale (default max)",
          choices=AGGREGATIONS),
    _flag("--calib-intervals", "calibration.intervals", "K > 1: one activation scale per timestep interval, picked "
          "in the exported graph from the timestep (default 1)", type=argtypes.steps, metavar="K"),
    _flag("--seed", "calibration.seed", "seed of the calibration trajectories (default: the recipe's, 0)",
          type=argtypes.seed, metavar="N"),
    _flag("--skip", "skip", "comma-separated substrings of denoiser layer names kept in floating point (replaces "
          "the backbone's default; SD's: conv_in,conv_out,conv_shortcut,add_embedding)", _patterns,
          metavar="PATTERNS"),
    _flag("--time-embedding", "time_embedding", "keep the time embedding and its per-block projections in float "
          "(default) or quantize them", choices=("float", "quantized")),
    _flag("--smoothquant", "smoothquant", "SmoothQuant the linear layers with this alpha (int8)",
          type=argtypes.unit_interval, metavar="ALPHA"),
    _flag("--split-shortcuts", "split_shortcuts", "own activation scales for the two halves (upsampled, skip) of "
          "up-block ResNet inputs (SD, SDXL)", action="store_true"),
    _flag("--auto-skip", "auto_skip", "sensitivity analysis: keep the layers that cost the most in float until the "
          "denoiser's output reaches this PSNR (dB) vs float on calibration inputs; prints the table",
          type=argtypes.finite, metavar="PSNR"),
)
register("quantize", QuantizeConfig, apply, check=check, shortcuts=SHORTCUTS,
         families=(*PASS_FAMILIES, "mmdit", "flux"))
