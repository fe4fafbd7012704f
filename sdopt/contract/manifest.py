"""The schema of `manifest.json`: every key, type and range an artifact's manifest may hold, and the rules
that tie its parts together (required components, where files may lie). `sdopt.contract.artifact` applies it before
any file of an artifact is opened.

Torch-free.
"""

from __future__ import annotations

from sdopt.contract import denoiser_spec
from sdopt.contract import schema as s
from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import ATTENTION_FORMS, DENOISER, TEXT_ENCODER, VAE_DECODER, VAE_ENCODER
from sdopt.contract.limits import MAX_SIDE, MAX_STEPS
from sdopt.contract.sampling import SCHEDULERS, pixel_size_multiple

SCHEMA_VERSION = 3  # 3: Optimum's graph I/O names, config.json per graph, OpenVINO IR inside graph folders
READABLE_VERSIONS = (2, 3)
FORMAT = "sdopt-artifact"  # the marker that tells an sdopt artifact from any other folder with a manifest.json
KINDS = ("sd", "sdxl", "sd3", "flux")
BUILDS = ("openvino", "tensorrt")
# builds whose files lie in each graph's folder (where optimum-intel looks), not in a folder of their own
GRAPH_FOLDER_BUILDS = {"openvino": ("openvino_model.xml", "openvino_model.bin")}
# non-graph files (lcm_lora: for other tools)
SUPPORT_FOLDERS = ("tokenizer", "tokenizer_2", "tokenizer_3", "scheduler", "lcm_lora")
TEXT_ENCODERS = {"sd": (1,), "sdxl": (2,), "sd3": (2, 3), "flux": (2,)}  # text-encoder graphs a kind may have
TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
REQUIRED_FILES = {"sd": ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json"),
                  "sdxl": ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
                           "tokenizer_2/tokenizer.json"),
                  "sd3": ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
                          "tokenizer_2/tokenizer.json"),
                  "flux": ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
                           "tokenizer_2/tokenizer.json")}

IDENTIFIER = r"[a-z][a-z0-9_]{0,63}"  # component names: also their folder names
PATH_PART = r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}"  # no leading dot: no '.', '..' or hidden files
RELATIVE_PATH = rf"{PATH_PART}(/{PATH_PART}){{0,7}}"
SHA256 = r"[0-9a-f]{64}"
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")

_name = s.string(IDENTIFIER, 64)
_side = s.integer(8, MAX_SIDE)
_file_entry = s.record({"sha256": s.string(SHA256), "bytes": s.integer(0, 1 << 50)})
_files = s.mapping(s.string(RELATIVE_PATH, 1100), _file_entry, 10_000)
_io = s.record({"name": s.string(max_length=256), "dtype": s.string(choices=DTYPES),
                "shape": s.array(s.either(s.integer(0, 1 << 31), s.string(max_length=256)), 8)})
_formats = s.array(s.string(choices=("int8", "float8e4m3fn", "int4")), 3)
_component = s.record(
    {"files": s.mapping(s.string(PATH_PART), _file_entry, 16, min_length=1), "role": _name,
     "inputs": s.array(_io, 64, min_length=1), "outputs": s.array(_io, 64, min_length=1)},
    {"tokenizer": s.string(choices=TOKENIZER_FOLDERS),
     "ops": s.mapping(s.string(max_length=128), s.integer(0)),
     "weight_format": _formats, "activation_format": _formats,
     "int8_weight_bits": s.integer(2, 8), "weight_group_size": s.integer(1, 1 << 20),
     "activation_scale_intervals": s.integer(2, MAX_STEPS), "attention": s.string(choices=ATTENTION_FORMS),
     "float_precision": s.string(choices=("fp16",))})
_openvino_build = s.record(
    {"files": _files, "openvino_version": s.string(), "seconds": s.number(0)},
    {"activation_zero_point": s.nullable(s.integer(0, 255)),
     "uint8_activation_quantizers": s.mapping(_name, s.integer(0)),
     "static": s.nullable(s.record({"batch": s.integer(1, 64), "height": _side, "width": _side}))})
_tensorrt_component = s.record(
    {"engines": s.array(s.string(RELATIVE_PATH, 1100), MAX_STEPS, min_length=1)},
    {"strongly_typed": s.boolean(), "flags": s.array(s.string(max_length=32), 16),
     "profiles": s.anything(4), "interval_per_timestep": s.number(0, low_open=True)})
_tensorrt_build = s.record(
    {"files": _files, "components": s.mapping(_name, _tensorrt_component), "tensorrt_version": s.string(),
     "seconds": s.number(0)},
    {"static": s.boolean(), "precision": s.string(choices=("fp16", "fp32"))})
_pipeline = s.record(
    {"kind": s.string(choices=KINDS), "height": _side, "width": _side, "latent_channels": s.integer(1, 64),
     "vae_scale_factor": s.integer(1, 64), "vae_scaling_factor": s.number(0, 1e6, low_open=True),
     "vae_shift_factor": s.nullable(s.number(-1e6, 1e6)), "latent_size_multiple": s.integer(1, 64),
     "max_length": s.integer(1, 4096), "steps": s.integer(1, MAX_STEPS), "guidance": s.number(-1e6, 1e6),
     "denoise": s.record({"strategy": _name}, {"params": s.anything(4)})},
    {"force_zeros_for_empty_prompt": s.boolean(), "scheduler": s.string(choices=tuple(SCHEDULERS)),
     "attention_downsample": s.integer(1, 1024), "denoiser": denoiser_spec.SCHEMA})
MANIFEST = s.record({
    "schema_version": s.integer(),
    "format": s.string(choices=(FORMAT,)),
    "sdopt_version": s.string(max_length=64),
    "source": s.record({"spec": s.string(max_length=4096), "kind": s.string(choices=KINDS),
                        "random_weights": s.boolean()},
                       {"pipeline_class": s.string(max_length=128), "family": s.string(max_length=64),
                        "note": s.string(max_length=512)}),
    "recipe": s.record({"name": s.string(max_length=256), "passes": s.array(s.anything(8), 64)}),
    "passes": s.array(s.anything(8), 64),
    "pipeline": _pipeline,
    "components": s.mapping(_name, _component, 32, min_length=1),
    "files": _files,
}, {
    "builds": s.record({}, {"openvino": _openvino_build, "tensorrt": _tensorrt_build}),
    "produced_by": s.anything(4),
})


def validate(manifest: object, where: str) -> dict:
    """The manifest as a dict that every consumer may trust, or SdoptError naming what is wrong."""
    if isinstance(manifest, dict) and manifest.get("schema_version") not in READABLE_VERSIONS \
            and isinstance(manifest.get("schema_version"), int):
        raise SdoptError(f"{where}: schema version {manifest['schema_version']}, this sdopt reads "
                         f"{' and '.join(map(str, READABLE_VERSIONS))} (make the artifact again with this sdopt's "
                         f"`sdopt compress`)")
    try:
        MANIFEST(manifest, "")
    except s.Invalid as err:
        raise SdoptError(f"{where}: {err}") from None
    _check_consistency(manifest, where)
    return manifest


def _check_denoiser_spec(spec: dict, components: dict, where: str) -> None:
    """The spec speaks of the artifact's own graphs: one input per role, each text encoder one of its text-encoder
    graphs (an input name the denoiser graph lacks is refused where the runtime compares the graph's inputs)."""
    roles = [i["role"] for i in spec["inputs"]]
    for entry in spec["inputs"]:
        if roles.count(entry["role"]) > 1:
            raise SdoptError(f"{where}: pipeline.denoiser.inputs: more than one input of role {entry['role']}")
    for encoder in spec["text_encoders"]:
        if components.get(encoder["graph"], {}).get("role") != TEXT_ENCODER:
            raise SdoptError(f"{where}: pipeline.denoiser.text_encoders: {encoder['graph']} is not a text encoder graph")
    if not any(e["combine"] != "pooled" for e in spec["text_encoders"]) and "absent_text_tokens" not in spec:
        raise SdoptError(f"{where}: pipeline.denoiser: no text encoder gives the denoiser its text tokens")
    if spec["guidance"] == "embedded" and "guidance_scale" not in roles:
        raise SdoptError(f"{where}: pipeline.denoiser: embedded guidance needs an input of role guidance_scale")


def _check_consistency(m: dict, where: str) -> None:
    kind = m["pipeline"]["kind"]
    if m["source"]["kind"] != kind:
        raise SdoptError(f"{where}: source kind {m['source']['kind']} but pipeline kind {kind}")
    components = m["components"]
    roles = [c["role"] for c in components.values()]
    for role, counts in ((TEXT_ENCODER, TEXT_ENCODERS[kind]), (DENOISER, (1,)), (VAE_DECODER, (1,))):
        if roles.count(role) not in counts:
            raise SdoptError(f"{where}: components: {roles.count(role)} graphs of role '{role}', a {kind} pipeline "
                             f"has {' or '.join(map(str, counts))}")
    if roles.count(VAE_ENCODER) > 1:
        raise SdoptError(f"{where}: components: more than one graph of role '{VAE_ENCODER}'")
    for name, component in components.items():
        if name in BUILDS or name in SUPPORT_FOLDERS:
            raise SdoptError(f"{where}: components.{name}: a reserved folder name")
        if "model.onnx" not in component["files"]:
            raise SdoptError(f"{where}: components.{name}.files: missing 'model.onnx'")
        if component["role"] == TEXT_ENCODER and f"{component.get('tokenizer')}/tokenizer.json" not in m["files"]:
            raise SdoptError(f"{where}: components.{name}: a text encoder needs the folder of its listed tokenizer")
    for rel in REQUIRED_FILES[kind]:
        if rel not in m["files"]:
            raise SdoptError(f"{where}: files: missing '{rel}'")
    for rel in m["files"]:
        top = rel.split("/")[0]
        if "/" in rel and top not in SUPPORT_FOLDERS:
            raise SdoptError(f"{where}: files.{rel}: outside {', '.join(SUPPORT_FOLDERS)} and the top level")
    info = m["pipeline"]
    if "denoiser" in info:
        _check_denoiser_spec(info["denoiser"], components, where)
    multiple = size_multiple(info)
    if info["vae_scale_factor"] & (info["vae_scale_factor"] - 1):
        raise SdoptError(f"{where}: pipeline.vae_scale_factor {info['vae_scale_factor']} is not a power of 2")
    for key in ("height", "width"):
        if info[key] % multiple:
            raise SdoptError(f"{where}: pipeline.{key} {info[key]} is not a multiple of {multiple}")
    for build_name, build in m.get("builds", {}).items():
        for rel in build["files"]:
            if not (in_build_folder(rel, build_name) or in_graph_folder(rel, build_name, components)):
                raise SdoptError(f"{where}: builds.{build_name}.files.{rel}: outside the {build_name}/ folder"
                                 + (f" and the graph folders' {' and '.join(GRAPH_FOLDER_BUILDS[build_name])}"
                                    if build_name in GRAPH_FOLDER_BUILDS else ""))
        for name, entry in build.get("components", {}).items():
            if name not in components:
                raise SdoptError(f"{where}: builds.{build_name}.components.{name}: no such component")
            for engine in entry["engines"]:
                if engine not in build["files"]:
                    raise SdoptError(f"{where}: builds.{build_name}.components.{name}: engine {engine} is not "
                                     f"listed in its files")


def in_build_folder(rel: str, build_name: str) -> bool:
    return "/" in rel and rel.split("/")[0] == build_name


def in_graph_folder(rel: str, build_name: str, components) -> bool:
    """`rel` is one of the files a graph-folder build puts in a graph's folder (`unet/openvino_model.xml`)."""
    folder, _, name = rel.partition("/")
    return folder in components and name in GRAPH_FOLDER_BUILDS.get(build_name, ())


def default_sampling(info: dict, steps: int | None = None, guidance: float | None = None,
                     scheduler: str | None = None) -> tuple:
    """(steps, guidance, scheduler): those given, else the artifact's own (its `pipeline` section)."""
    return (steps or info["steps"], info["guidance"] if guidance is None else guidance,
            scheduler or info.get("scheduler", "ddim"))


def size_multiple(info: dict) -> int:
    """Pixels that image sides must be a multiple of, from a manifest's pipeline section."""
    return pixel_size_multiple(info["vae_scale_factor"], info["latent_size_multiple"])


def check_vae_tile(tile: int, info: dict) -> None:
    """A tiled VAE decode's tile side in pixels: 0 (whole images) or a multiple of 4 latent pixels."""
    multiple = info["vae_scale_factor"] * 4
    if tile and (tile < multiple or tile % multiple or tile > MAX_SIDE):
        raise SdoptError(f"vae tile {tile}: a multiple of {multiple} pixels up to {MAX_SIDE} (0: no tiling)")


def listed_files(m: dict) -> dict[str, dict]:
    """Every file of a validated manifest, relative path -> {sha256, bytes}."""
    files = dict(m["files"])
    for name, component in m["components"].items():
        files.update({f"{name}/{f}": entry for f, entry in component["files"].items()})
    for build in m.get("builds", {}).values():
        files.update(build["files"])
    return files


def scanned_folders(m: dict) -> list[str]:
    """Folders whose every file must be listed: those a backend or the runtime opens files in."""
    return list(m["components"]) + [f for f in SUPPORT_FOLDERS if any(r.startswith(f + "/") for r in m["files"])] \
        + [name for name, build in m.get("builds", {}).items() if any(in_build_folder(r, name) for r in build["files"])]
