"""`sdopt build DIR --format tensorrt`: one TensorRT engine per ONNX component (TensorRT Python API).

- Optimization profiles from the requested min/opt/max batch and image size (the denoiser sees twice the
  batch: classifier-free guidance runs negative and positive prompt together); `static` builds
  min = opt = max, for edge devices.
- Precision: the artifact's Q/DQ decide int8 / fp8 / int4 regions (explicit quantization). Float layers
  run fp16 (weakly typed network, FP16 flag plus the flag of each Q/DQ format) or, with
  `precision="fp32"`, as the ONNX types say (strongly typed network: every type from the graph).
- A timing cache is read before and written after every build, so rebuilds skip layer timing.
- Interval scales (`--calib-intervals K`) are gathered by timestep in the artifact's graph; TensorRT wants
  constant scales, so the denoiser becomes K engines, each with its interval's constants, and the runtime
  picks the engine by timestep.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from sdopt.contract.denoiser_spec import guidance_branches
from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import is_denoiser
from sdopt.export.rewrite import constant_interval_scales, interval_count, interval_per_timestep, rewritten_copy

BUILD_DIR = "tensorrt"
MAX_TIMING_CACHE_BYTES = 1 << 30
FORMAT_FLAGS = {"int8": "INT8", "float8e4m3fn": "FP8", "int4": "INT4"}


@dataclass(frozen=True)
class TensorrtConfig:
    batch: tuple[int, int, int] = (1, 1, 1)  # images per prompt: min, opt, max
    height: tuple[int, int, int] | None = None  # pixels: min, opt, max (default: the model's size)
    width: tuple[int, int, int] | None = None
    static: bool = False  # one shape: the opt values
    precision: str = "fp16"  # float layers: fp16 (weakly typed) or fp32 (strongly typed)
    guidance: bool = True
    workspace_gib: float | None = None
    timing_cache: Path | None = None  # default: DIR/tensorrt/timing.cache


def parse_range(text: str, multiple: int = 1) -> tuple[int, int, int]:
    """"512" -> (512, 512, 512); "256:512:768" -> min, opt, max."""
    try:
        values = tuple(int(v) for v in text.split(":"))
    except ValueError:
        raise SdoptError(f"'{text}' is not N or MIN:OPT:MAX") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not 0 < values[0] <= values[1] <= values[2]:
        raise SdoptError(f"'{text}' is not N or MIN:OPT:MAX with 0 < MIN <= OPT <= MAX")
    if any(v % multiple for v in values):
        raise SdoptError(f"'{text}': every value must be a multiple of {multiple}")
    return values


def config_from_flags(info: dict, *, batch: str | None, height: str | None, width: str | None, static: bool,
                      precision: str, workspace: float | None, timing_cache: Path | None) -> TensorrtConfig:
    """`sdopt build --format tensorrt` flags -> a config, checked against the artifact's pipeline section."""
    from sdopt.contract.manifest import size_multiple
    from sdopt.contract.safe_io import check_output_file

    multiple = size_multiple(info)
    if workspace is not None and workspace <= 0:
        raise SdoptError(f"--workspace {workspace}: must be a positive number of GiB")
    if timing_cache is not None:
        check_output_file(timing_cache, "--timing-cache")
    return TensorrtConfig(batch=parse_range(batch or "1"), height=parse_range(height, multiple) if height else None,
                          width=parse_range(width, multiple) if width else None, static=static, precision=precision,
                          workspace_gib=workspace, timing_cache=timing_cache)


def input_profiles(name: str, component: dict, info: dict, config: TensorrtConfig) -> dict:
    """{input name: (min shape, opt shape, max shape)} from the manifest's symbolic input shapes. Denoiser
    graphs run at twice the image batch with classifier-free guidance (the denoiser spec's guidance kind); a
    dimension 'height/K' is the latent height over K (a cached denoiser feature)."""
    height = config.height or (info["height"],) * 3
    width = config.width or (info["width"],) * 3
    batch = config.batch
    if config.guidance and is_denoiser(component["role"]):
        batch = tuple(guidance_branches(info.get("denoiser")) * b for b in batch)
    f = info["vae_scale_factor"]
    dims = {"batch": batch, "height": tuple(h // f for h in height), "width": tuple(w // f for w in width)}
    profiles = {}
    for spec in component["inputs"]:
        shapes = []
        for i in range(3):
            shape = []
            for d in spec["shape"]:
                axis, _, over = d.partition("/") if isinstance(d, str) else (d, "", "")
                if isinstance(d, int):
                    shape.append(d)
                elif axis in dims and (not over or over.isdigit() and int(over) > 0):
                    size = dims[axis][1] if config.static else dims[axis][i]
                    shape.append(size // int(over) if over else size)
                else:
                    raise SdoptError(f"{name}: input {spec['name']} has a dimension '{d}' that no profile sets")
            shapes.append(tuple(shape))
        profiles[spec["name"]] = tuple(shapes)
    return profiles


def network_settings(component: dict, precision: str) -> tuple[bool, list[str]]:
    """(strongly typed, builder flags) for a component of the manifest."""
    if precision not in ("fp16", "fp32"):
        raise SdoptError(f"unknown TensorRT float precision '{precision}'; choose fp16 or fp32")
    formats = set(component.get("weight_format", [])) | set(component.get("activation_format", []))
    if precision == "fp32":
        return True, []
    return False, ["FP16"] + sorted({FORMAT_FLAGS[f] for f in formats if f in FORMAT_FLAGS})


def parser_graphs(folder: Path, name: str) -> list[tuple[str, onnx.ModelProto | None]]:
    """What the ONNX parser gets for a component: [(engine file, graph)], graph None = the artifact's
    own file as it is; an interval-scale denoiser gives one constant-scale graph per interval."""
    path = Path(folder) / name / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    for init in model.graph.initializer:  # TensorRT's explicit quantization is symmetric
        if init.name.endswith("_zero_point") and init.data_type == onnx.TensorProto.UINT8:
            raise SdoptError(f"{path}: uint8 activations with a zero point; TensorRT needs the symmetric int8 form")
    intervals = interval_count(model)
    if intervals == 1:
        return [(f"{name}.plan", None)]
    graphs = []
    for k in range(intervals):
        graph = onnx.ModelProto()
        graph.CopyFrom(model)
        constant_interval_scales(graph, k)
        graphs.append((f"{name}.interval{k}.plan", graph))
    return graphs


def build_engine(onnx_path: Path, profiles: dict, strongly_typed: bool, flags: list[str],
                 timing_cache: bytes, workspace_gib: float | None) -> tuple[bytes, bytes]:
    """Serialized engine and the updated timing cache."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SdoptError(f"{onnx_path}: TensorRT's ONNX parser refused it ({errors})")
    config = builder.create_builder_config()
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profiles.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SdoptError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    return bytes(plan), bytes(cache.serialize())


def plan_build(folder: Path, config: TensorrtConfig) -> dict:
    """Everything about the build that needs no GPU: per component its graphs, profiles and flags."""
    from sdopt.contract.artifact import open_artifact

    artifact = open_artifact(folder, verify=False)
    info = artifact.pipeline
    plan = {}
    for name, component in artifact.components.items():
        strongly_typed, flags = network_settings(component, config.precision)
        plan[name] = {"graphs": parser_graphs(folder, name), "strongly_typed": strongly_typed, "flags": flags,
                      "profiles": input_profiles(name, component, info, config)}
        if len(plan[name]["graphs"]) > 1:
            plan[name]["interval_per_timestep"] = interval_per_timestep(
                onnx.load(str(Path(folder) / name / "model.onnx"), load_external_data=False))
    return plan


def build(folder: Path, config: TensorrtConfig, progress=None) -> dict:
    """Write DIR/tensorrt/<component>[.intervalK].plan and record them in the manifest."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise SdoptError("building TensorRT engines needs TensorRT and an NVIDIA GPU: "
                         "pip install 'sdopt[tensorrt]' on a machine with one") from err
    from sdopt.contract.artifact import open_artifact, record_build
    from sdopt.contract.safe_io import read_bytes, staging_folder, write_atomically

    folder = Path(folder)
    artifact = open_artifact(folder)
    plan = plan_build(folder, config)
    own_cache = artifact.build(BUILD_DIR) and f"{BUILD_DIR}/timing.cache" in artifact.build(BUILD_DIR)["files"]
    cache_path = Path(config.timing_cache) if config.timing_cache else folder / BUILD_DIR / "timing.cache"
    timing_cache = read_bytes(cache_path, "--timing-cache", MAX_TIMING_CACHE_BYTES) \
        if cache_path.exists() and (config.timing_cache or own_cache) else b""
    start = time.perf_counter()
    staging = staging_folder(folder, BUILD_DIR)
    try:
        components = {}
        jobs = [(name, engine, graph) for name, p in plan.items() for engine, graph in p["graphs"]]
        for name, engine, graph in (progress(jobs) if progress else jobs):
            p = plan[name]
            onnx_path = folder / name / "model.onnx"
            with (rewritten_copy(onnx_path, graph) if graph is not None else contextlib.nullcontext(onnx_path)) as path:
                serialized, timing_cache = build_engine(path, p["profiles"], p["strongly_typed"], p["flags"],
                                                        timing_cache, config.workspace_gib)
            (staging / engine).write_bytes(serialized)
            entry = components.setdefault(name, {
                "engines": [], "strongly_typed": p["strongly_typed"], "flags": p["flags"],
                "profiles": {k: [list(s) for s in v] for k, v in p["profiles"].items()},
                **({"interval_per_timestep": p["interval_per_timestep"]} if "interval_per_timestep" in p else {})})
            entry["engines"].append(f"{BUILD_DIR}/{engine}")
        (staging / "timing.cache").write_bytes(timing_cache)
        if config.timing_cache:
            write_atomically(cache_path, lambda tmp: Path(tmp).write_bytes(timing_cache))
        files = [f"{BUILD_DIR}/{p.name}" for p in sorted(staging.iterdir()) if p.suffix in (".plan", ".cache")]
        record = {"files": files, "components": components, "tensorrt_version": trt.__version__,
                  "static": config.static, "precision": config.precision,
                  "seconds": round(time.perf_counter() - start, 1)}
        return record_build(artifact, BUILD_DIR, staging, record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
