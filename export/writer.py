"""Write a (possibly compressed) torch pipeline as an artifact folder: ONNX per component,
tokenizer.json, scheduler config, model_index.json and manifest.json."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import onnx
from tqdm.auto import tqdm

from sdopt import __version__
from sdopt.artifact import ArtifactWriter
from sdopt.export import onnx as onnx_export
from sdopt.export import qdq


def write_artifact(source, recipe: dict, out: Path, command: list[str] | None = None,
                   external_data: bool = False) -> Path:
    """`external_data`: every graph's weights in a `model.onnx_data` file beside it (default: only graphs
    whose weights pass protobuf's 2 GiB limit)."""
    with ArtifactWriter(out) as writer:
        for i, tokenizer in enumerate(source.tokenizers):
            folder = "tokenizer" if i == 0 else f"tokenizer_{i + 1}"
            save_tokenizer_json(tokenizer, writer.path(f"{folder}/tokenizer.json"))
        writer.write_json("scheduler/scheduler_config.json", dict(source.pipeline.scheduler.config), strict=False)

        total = len(source.text_encoders) + 2
        for graph in tqdm(_component_graphs(source), total=total, desc="exporting ONNX", unit="component"):
            files = onnx_export.save_model(graph.model, writer.path(graph.name), external_data)
            writer.add_component(graph.name, files, *_io_signature(graph.model),
                                 ops={k: v for k, v in qdq.count_ops(graph.model).items()
                                      if k in ("QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm")},
                                 **graph.details)
            del graph

        writer.write_json("model_index.json", {
            "_class_name": "SdoptOnnxPipeline", "_sdopt_version": __version__,
            **{name: ["onnx", "model.onnx"] for name in writer.components},
            "tokenizer": ["tokenizers", "tokenizer.json"], "scheduler": ["numpy", "scheduler_config.json"],
        })
        return writer.commit({
            "source": source.describe(),
            "recipe": recipe,
            "passes": source.records,
            "pipeline": pipeline_info(source),
            "produced_by": produced_by(command),
        })


def _component_graphs(source):
    """One graph at a time, so a large model never holds every exported graph in memory."""
    for graph in onnx_export.export_text_encoders(source):
        yield graph
    yield _unet_graph(source)
    yield onnx_export.export_vae_decoder(source)


def _unet_graph(source):
    unet = source.pipeline.unet
    layers = qdq.collect_layers(unet) if _has_quantizers(unet) else []
    if not layers:
        return onnx_export.export_unet(source)
    with qdq.quantizers_disabled(unet):
        graph = onnx_export.export_unet(source, unet)
    intervals = max((len(layer.input_table) for layer in layers if layer.input_table is not None), default=1)
    index = qdq.IntervalIndex("timestep", intervals, int(source.pipeline.scheduler.config.num_train_timesteps))
    qdq.insert_qdq(graph.model, layers, scope="/unet/", interval=index)
    graph.details["weight_format"] = sorted({layer.weight_format.name for layer in layers})
    graph.details["activation_format"] = sorted({layer.activation_format.name for layer in layers})
    int8_weights = [layer.weight_max for layer in layers if layer.weight_format.name == "int8"]
    if int8_weights:
        graph.details["int8_weight_bits"] = int(max(int8_weights)).bit_length() + 1
    groups = {layer.group_size for layer in layers if layer.group_size}
    if groups:
        graph.details["weight_group_size"] = max(groups)
    if intervals > 1:
        # the scales are picked in the graph from the timestep input: backends that need constant
        # scales (TensorRT) cannot build this graph as it is
        graph.details["activation_scale_intervals"] = intervals
    return graph


def _has_quantizers(unet) -> bool:
    return any(hasattr(m, "weight_quantizer") for m in unet.modules())


def save_tokenizer_json(tokenizer, path: Path) -> None:
    """The fast tokenizer with SD's padding (to 77, with the model's pad token) and truncation
    baked in, so the runtime needs only `tokenizers.Tokenizer.from_file`."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    length = tokenizer.model_max_length
    backend.enable_truncation(max_length=length)
    backend.enable_padding(length=length, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    backend.save(str(path))


def pipeline_info(source) -> dict:
    pipe = source.pipeline
    vae = pipe.vae.config
    info = {
        "kind": source.kind,
        "height": source.height,
        "width": source.width,
        "latent_channels": vae.latent_channels,
        "vae_scale_factor": 2 ** (len(vae.block_out_channels) - 1),
        "vae_scaling_factor": vae.scaling_factor,
        "vae_shift_factor": getattr(vae, "shift_factor", None),
        "latent_size_multiple": onnx_export.unet_size_multiple(pipe.unet),
        "max_length": source.tokenizers[0].model_max_length,
        "steps": source.steps,
        "guidance": source.guidance,
    }
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
