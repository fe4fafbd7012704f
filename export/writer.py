"""Write a (possibly compressed) torch pipeline as an artifact folder: ONNX per component with its model's
config.json, tokenizer files, scheduler config, model_index.json and manifest.json.

The folder is also a diffusers ONNX pipeline as Optimum exports one: `model_index.json` names diffusers and
transformers classes, each graph folder has its model's `config.json`, the tokenizer folders hold the files
transformers reads (vocab.json, merges.txt, tokenizer_config.json) beside sdopt's padded tokenizer.json, and
graph I/O names are Optimum's (`sdopt.contract.graphs`); Optimum's ORT pipelines and optimum-intel's OpenVINO ones
(after `sdopt build --format openvino`) load it."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import onnx
from tqdm.auto import tqdm

from sdopt.backbones.attention import attention_form
from sdopt.contract.artifact import ArtifactWriter
from sdopt.contract.cache import first_non_finite
from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import DEFAULT_ATTENTION, TEXT_ENCODER, GraphSpec, is_denoiser
from sdopt.contract.tokenizer_files import backend_tokenizer
from sdopt.contract.version import __version__
from sdopt.export import onnx as onnx_export
from sdopt.export import qdq

MODEL_CONFIG = "config.json"


def write_artifact(source, recipe: dict, out: Path, command: list[str] | None = None,
                   external_data: bool = False, attention: str = DEFAULT_ATTENTION, float16: bool = False) -> Path:
    """`external_data`: every graph's weights in a `model.onnx_data` file beside it (default: only graphs
    whose weights pass `onnx.EXTERNAL_DATA_THRESHOLD`). `attention`: the form the attention layers are exported in
    (`sdopt.backbones.attention`). `float16`: graphs in fp16 with float32 inputs and outputs (`onnx.to_float16`)."""
    graphs = onnx_export.graph_set(source)
    for spec in graphs:  # every weight is finite before anything is written
        bad = first_non_finite(spec.wrapper)
        if bad is not None:
            raise SdoptError(f"the {spec.name} graph's weight {bad} holds NaN or Inf: no artifact written (a pass "
                             f"or a weight file it read made it non-finite)")
    with ArtifactWriter(out) as writer:
        for encoder in source.text_encoder_graphs():
            save_tokenizer(encoder.tokenizer, writer, encoder.tokenizer_folder, encoder.max_length)
        writer.write_json("scheduler/scheduler_config.json", dict(source.pipeline.scheduler.config), strict=False)
        for relative, data in source.outputs.files.items():
            writer.write_file(relative, data)

        for spec in tqdm(graphs, desc="exporting ONNX", unit="graph"):
            with attention_form(spec.wrapper, attention) as changed:
                model, details = export_graph(source, spec)  # one graph in memory at a time
            if changed:
                details["attention"] = attention
            if float16:
                model = onnx_export.to_float16(model)
                details["float_precision"] = "fp16"
            files = onnx_export.save_model(model, writer.path(spec.name), external_data)
            writer.write_json(f"{spec.name}/{MODEL_CONFIG}", model_config(source.pipeline, spec), strict=False)
            files.append(MODEL_CONFIG)
            writer.add_component(spec.name, files, *_io_signature(model), role=spec.role, **spec.details,
                                 ops={k: v for k, v in qdq.count_ops(model).items()
                                      if k in ("QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm")},
                                 **details)
            del model

        writer.write_json("model_index.json", model_index(source.pipeline), strict=False)
        info = pipeline_info(source)
        info["denoiser"] = source.backbone.denoiser_spec(source, writer.components)
        return writer.commit({
            "source": source.describe(),
            "recipe": recipe,
            "passes": source.outputs.records,
            "pipeline": info,
            "produced_by": produced_by(command),
        })


def export_graph(source, spec: GraphSpec) -> tuple[onnx.ModelProto, dict]:
    """The graph, with Q/DQ on the quantized layers it holds when a pass quantized its component; and what
    the manifest records about its quantization."""
    quantization = source.outputs.quantization.get(spec.component)
    if quantization is None:
        return onnx_export.export_graph(spec), {}
    with quantization.trace(getattr(source.pipeline, spec.component)):
        model = onnx_export.export_graph(spec)
    layers = qdq.insert_qdq(model, quantization.layers, scope=spec.scope, interval=quantization.interval,
                            require_all=not spec.partial)
    return model, quantization_details(layers)


def quantization_details(layers) -> dict:
    if not layers:
        return {}
    details = {"weight_format": sorted({layer.weight_format.name for layer in layers}),
               "activation_format": sorted({layer.activation_format.name for layer in layers})}
    int8_weights = [layer.weight_max for layer in layers if layer.weight_format.name == "int8"]
    if int8_weights:
        details["int8_weight_bits"] = int(max(int8_weights)).bit_length() + 1
    groups = {layer.group_size for layer in layers if layer.group_size}
    if groups:
        details["weight_group_size"] = max(groups)
    intervals = max((len(layer.input_table) for layer in layers if layer.input_table is not None), default=1)
    if intervals > 1:
        # the scales are picked in the graph from the timestep input: backends that need constant
        # scales (TensorRT) cannot build this graph as it is
        details["activation_scale_intervals"] = intervals
    return details


def save_tokenizer(tokenizer, writer: ArtifactWriter, folder: str, length: int) -> None:
    """The tokenizer as transformers saves it (plus CLIP's vocab.json and merges.txt where it leaves them out),
    and as tokenizer.json with the pipeline's padding (to `length` tokens: CLIP's 77, SD3's 256 for T5, with the
    model's pad token) and truncation baked in: the runtime needs only `tokenizers.Tokenizer.from_file`."""
    from tokenizers import Tokenizer, models

    out = writer.path(f"{folder}/tokenizer.json").parent
    tokenizer.save_pretrained(str(out))
    backend = Tokenizer.from_str(backend_tokenizer(tokenizer).to_str())
    bpe = isinstance(backend.model, models.BPE)
    if bpe and (not (out / "vocab.json").is_file() or not (out / "merges.txt").is_file()):
        backend.model.save(str(out))  # a BPE model writes exactly these two
    backend.enable_truncation(max_length=length)
    backend.enable_padding(length=length, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    backend.save(str(out / "tokenizer.json"))
    writer.added.extend(f"{folder}/{p.name}" for p in sorted(out.iterdir()))


def model_index(pipeline) -> dict:
    """diffusers' model_index.json for the source pipeline: its class, its components' libraries and classes
    (the tokenizers as transformers' CLIPTokenizer, which reads vocab.json and merges.txt) and options."""
    import diffusers

    index = {key: value for key, value in dict(pipeline.config).items() if not key.startswith("_")}
    for key, value in index.items():
        if key.startswith("tokenizer") and value and value[0] is not None:
            t5 = "T5" in type(getattr(pipeline, key)).__name__
            index[key] = ["transformers", "T5TokenizerFast" if t5 else "CLIPTokenizer"]
    return {"_class_name": type(pipeline).__name__, "_diffusers_version": diffusers.__version__,
            "_sdopt_version": __version__, **index}


def model_config(pipeline, spec: GraphSpec) -> dict:
    """The config.json of the model a graph comes from (what Optimum reads beside each graph): the text
    encoder's, the denoiser's for denoiser graphs, the VAE's for VAE graphs (a tiny decoder's too: the pipeline
    reads its latent scaling from there)."""
    if spec.role == TEXT_ENCODER:
        encoder = getattr(pipeline, spec.component)
        return {**json.loads(encoder.config.to_json_string(use_diff=False)),
                "architectures": [type(encoder).__name__]}
    model = getattr(pipeline, spec.component) if is_denoiser(spec.role) else pipeline.vae
    return json.loads(model.to_json_string())


def pipeline_info(source) -> dict:
    pipe, backbone = source.pipeline, source.backbone
    denoiser = backbone.denoiser(pipe)
    vae = pipe.vae.config
    info = {
        "kind": source.kind,
        "height": source.height,
        "width": source.width,
        "latent_channels": vae.latent_channels,
        "vae_scale_factor": 2 ** (len(vae.block_out_channels) - 1),
        "vae_scaling_factor": vae.scaling_factor,
        "vae_shift_factor": getattr(vae, "shift_factor", None),
        "latent_size_multiple": backbone.latent_size_multiple(denoiser),
        "max_length": source.tokenizers[0].model_max_length,
        "steps": source.steps,
        "guidance": source.guidance,
        "scheduler": source.scheduler,
        "denoise": source.outputs.denoise,
    }
    downsample = backbone.attention_downsample(denoiser)
    if downsample is not None:
        info["attention_downsample"] = downsample
    if source.kind == "sdxl":
        info["force_zeros_for_empty_prompt"] = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
    return info


def produced_by(command: list[str] | None) -> dict:
    versions = {"sdopt": __version__, "python": platform.python_version(), "onnx": onnx.__version__}
    for name in ("torch", "diffusers", "transformers", "modelopt"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = module.__version__
    return {"versions": versions, "command": command or []}


def _io_signature(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    def describe(value):
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        return {"name": value.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return [describe(v) for v in model.graph.input], [describe(v) for v in model.graph.output]
