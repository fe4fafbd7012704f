"""The peers other tools make from the same model source, for `sdopt bench`: each built once as its tool's
own docs say, cached under $SDOPT_CACHE/peers, with how it was built (tool versions, settings, seconds).

    optimum-ort    Optimum's own ONNX export (`optimum.exporters.onnx.main_export`, fp32) in its
                   ORTStableDiffusionPipeline
    openvino-int8  optimum-intel's OpenVINO export with NNCF hybrid INT8 quantization (convolutions W8A8,
                   MatMuls and embeddings INT8 weight-only), calibrated on 200 UNet calls of the model's
                   calibration prompts: Intel's recipe for SD (16 calls for SD3 and FLUX transformers)
    sdcpp-f16      stable-diffusion.cpp (ggml) through stable-diffusion-cpp-python, loading the diffusers
    sdcpp-q8_0     folder's safetensors and converting the weights to f16 or q8_0 as it loads them
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

from sdopt.contract.errors import SdoptError
from sdopt.reference.families import FAMILIES

TOOLS = {  # peer: (module it needs, how to install it)
    "optimum-ort": ("optimum.onnxruntime", "pip install 'optimum-onnx[onnxruntime]'"),
    "openvino-int8": ("optimum.intel", "pip install optimum-intel nncf"),
    "sdcpp-f16": ("stable_diffusion_cpp", "pip install stable-diffusion-cpp-python"),
    "sdcpp-q8_0": ("stable_diffusion_cpp", "pip install stable-diffusion-cpp-python"),
}
SDCPP_WEIGHTS = {"sdcpp-f16": "f16", "sdcpp-q8_0": "q8_0"}
HYBRID_CALIBRATION_CALLS = 200  # optimum-intel's default for diffusion models (and Intel's SD notebooks)
# a transformer's calibration calls on a 2-core CPU: 200 of them (at 1024², with T5) do not fit a benchmark run
DIT_HYBRID_CALIBRATION_CALLS = 16
BUILD_RECORD = "sdopt_peer_build.json"


def installed(peer: str) -> bool:
    module = TOOLS[peer][0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _cache(kind: str, spec: str) -> Path:
    from sdopt.contract.cache import cache_root, source_key
    from sdopt.contract.version import __version__
    from sdopt.reference.families import source_folder

    return cache_root() / "peers" / f"{kind}-{source_key(spec, __version__, kind, source_folder(spec))}"


def _cached(folder: Path, build) -> Path:
    """`folder` when a complete build lies there, else built into a temporary folder and renamed there."""
    if (folder / BUILD_RECORD).is_file():
        return folder
    from sdopt.contract.safe_io import commit_folder, staging_folder

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(folder.parent, folder.name)
    try:
        start = time.perf_counter()
        record = build(staging)
        record["seconds"] = round(time.perf_counter() - start, 1)
        (staging / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)  # an incomplete entry of sdopt's own cache
        commit_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def build_record(folder: Path, peer: str = "") -> dict:
    """How the peer in `folder` was built (stable-diffusion.cpp builds nothing ahead: it converts as it loads)."""
    if peer in SDCPP_WEIGHTS:
        return {"how": f"stable-diffusion.cpp loads the diffusers folder and converts its weights to "
                       f"{SDCPP_WEIGHTS[peer]} while loading (in load s)",
                "versions": versions("stable-diffusion-cpp-python")}
    return json.loads((Path(folder) / BUILD_RECORD).read_text())


def diffusers_folder(spec: str) -> Path:
    """The model source as a diffusers pipeline folder (the folder itself, or the source saved once)."""
    if spec in FAMILIES:
        return FAMILIES[spec].model_dir
    if not spec.startswith("arch:"):
        return Path(spec)

    def save(out: Path) -> dict:
        from sdopt.sources.source import load_source

        load_source(spec).pipeline.save_pretrained(str(out), safe_serialization=True)
        return {"how": f"{spec} saved with diffusers' save_pretrained (fp32 safetensors)"}
    return _cached(_cache("diffusers", spec), save)


SDCPP_UNETS = ([320, 640, 1280, 1280], [320, 640, 1280])  # SD 1.x / 2.x and SDXL: the UNets it implements


def unsupported(peer: str, spec: str) -> str | None:
    """Why the peer cannot run this model source, or None."""
    if peer == "openvino-int8" and _without_t5(spec):
        return ("optimum-intel's export loads an SD3 folder with its T5 only (diffusers needs text_encoder_3=None "
                "passed, which its loader does not pass)")
    if peer not in SDCPP_WEIGHTS:
        return None
    if _transformer_source(spec):
        return ("stable-diffusion.cpp reads SD3.5 and FLUX from single-file checkpoints (safetensors or GGUF), not "
                "from a diffusers folder")
    if spec in FAMILIES or spec == "arch:tiny":
        return "stable-diffusion.cpp implements the SD 1.x, 2.x and XL architectures only"
    if not spec.startswith("arch:"):
        try:
            config = json.loads((Path(spec) / "unet" / "config.json").read_text())
        except (OSError, ValueError):
            return f"{spec} has no readable unet/config.json"
        if config.get("block_out_channels") not in SDCPP_UNETS or config.get("layers_per_block") != 2:
            return "stable-diffusion.cpp implements the SD 1.x, 2.x and XL architectures only"
    return None


def _transformer_source(spec: str) -> bool:
    """An SD3 or FLUX source (a transformer denoiser)."""
    from sdopt.sources.archs import DIT_ARCHS

    if spec.startswith("arch:"):
        return spec[len("arch:"):] in DIT_ARCHS
    return (diffusers_folder(spec) / "transformer").is_dir()


def _without_t5(spec: str) -> bool:
    """An SD3 source without its T5 encoder (the SD3 architectures built here; a folder whose index has none)."""
    from sdopt.sources.archs import DIT_ARCHS

    if spec.startswith("arch:"):
        arch = DIT_ARCHS.get(spec[len("arch:"):])
        return arch is not None and arch.kind == "sd3"
    try:
        index = json.loads((diffusers_folder(spec) / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("text_encoder_3") == [None, None]


def prepare(peer: str, spec: str) -> Path:
    """The folder the peer's benchmark process loads, built first where need be."""
    if not installed(peer):
        raise SdoptError(f"peer {peer} needs {TOOLS[peer][0]}: {TOOLS[peer][1]}")
    source = diffusers_folder(spec)
    if peer == "optimum-ort":
        return _cached(_cache(peer, spec), lambda out: _optimum_export(source, spec, out))
    if peer == "openvino-int8":
        return _cached(_cache(peer, spec), lambda out: _hybrid_int8(source, spec, out))
    return source  # stable-diffusion.cpp converts the weights as it loads them


def versions(*modules: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in modules:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _optimum_export(source: Path, spec: str, out: Path) -> dict:
    from optimum.exporters.onnx import main_export, onnx_export_from_model

    found = versions("optimum", "optimum-onnx", "onnxruntime", "transformers", "diffusers")
    if _without_t5(spec):  # main_export's diffusers loader needs the T5 an SD3 folder may leave out
        from sdopt.sources.source import load_source

        print(f"exporting {spec} with Optimum (onnx_export_from_model, task text-to-image)", file=sys.stderr)
        onnx_export_from_model(load_source(spec).pipeline, output=str(out), task="text-to-image", device="cpu")
        return {"how": "optimum.exporters.onnx.onnx_export_from_model(<the pipeline without T5>, "
                       "task='text-to-image'), fp32", "versions": found}
    print(f"exporting {source} with Optimum (main_export, task text-to-image)", file=sys.stderr)
    main_export(str(source), output=str(out), task="text-to-image", device="cpu")
    return {"how": "optimum.exporters.onnx.main_export(task='text-to-image'), fp32", "versions": found}


def _hybrid_int8(source: Path, spec: str, out: Path) -> dict:
    from optimum.intel import OVPipelineForText2Image, OVWeightQuantizationConfig

    from sdopt.reference.prompts import calibration_prompt_pool
    from sdopt.sources.source import load_source

    prompts = list(calibration_prompt_pool(load_source(spec).family))
    calls = DIT_HYBRID_CALIBRATION_CALLS if _transformer_source(spec) else HYBRID_CALIBRATION_CALLS
    config = OVWeightQuantizationConfig(bits=8, quant_method="hybrid", dataset=prompts, num_samples=calls)
    print(f"quantizing {source} with optimum-intel / NNCF hybrid INT8 ({calls} calibration denoiser calls)",
          file=sys.stderr)
    pipe = OVPipelineForText2Image.from_pretrained(str(source), export=True, quantization_config=config,
                                                   compile=False)
    pipe.save_pretrained(str(out))
    return {"how": f"OVPipelineForText2Image.from_pretrained(export=True, quantization_config="
                   f"OVWeightQuantizationConfig(bits=8, quant_method='hybrid', dataset=<{len(prompts)} calibration "
                   f"prompts>, num_samples={calls}))" + (" (fewer calibration calls than optimum-intel's 200: a "
                                                          "transformer's do not fit a 2-core CPU's run)"
                                                          if calls != HYBRID_CALIBRATION_CALLS else ""),
            "versions": versions("optimum-intel", "nncf", "openvino", "transformers", "diffusers")}
