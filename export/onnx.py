"""ONNX export of a pipeline's graphs (text encoder(s), denoiser, VAE decoder and encoder, and graphs passes add).

Graphs have dynamic batch / height / width. Uses the TorchScript-based exporter (`dynamo=False`),
which keeps each module's path in node names (`/down_blocks.0/resnets.0/conv1/Conv`): the Q/DQ
pass relies on those names to find the node of each quantized layer.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from sdopt.contract.graphs import (
    HIDDEN_STATE,
    IMAGE_IO,
    LATENT_INPUT,
    POOLED_OUTPUT,
    POSTERIOR_OUTPUT,
    PROMPT_OUTPUT,
    TEXT_ENCODER,
    VAE_DECODER,
    VAE_ENCODER,
    GraphSpec,
)
from sdopt.contract.safe_io import umask

OPSET = 17
# bytes of weights above which a graph keeps them in `model.onnx_data`: ONNX Runtime then maps them from the
# file instead of parsing a copy (SD1.5's denoiser int8: load peak 1.07 GB vs 1.76 GB, 2.4 s vs 4.0 s), and
# protobuf refuses files over 2 GiB anyway; small graphs stay one file
EXTERNAL_DATA_THRESHOLD = 64_000_000
EXTERNAL_DATA_NAME = "model.onnx_data"


class _TextEncoder(torch.nn.Module):
    """Outputs as Optimum's export has them: SD the last hidden state; SDXL and SD3 also every layer's hidden
    state (the pipeline reads the penultimate), after the pooled projection (`text_embeds`) of a CLIP with
    projection; FLUX's plain CLIP its pooled output (`pooler_output`) after the last hidden state."""

    def __init__(self, encoder, all_layers: bool, pooled: str | None):
        super().__init__()
        self.encoder, self.all_layers, self.pooled = encoder, all_layers, pooled

    def forward(self, input_ids):
        out = self.encoder(input_ids, output_hidden_states=self.all_layers)
        outputs = (out.last_hidden_state, *(out.hidden_states if self.all_layers else ()))
        if self.pooled == POOLED_OUTPUT:
            return (out.text_embeds, *outputs)
        return (*outputs, out.pooler_output) if self.pooled else outputs


def text_encoder_outputs(encoder, all_layers: bool, pooled: str | None) -> list[str]:
    layers = [HIDDEN_STATE.format(i) for i in range(encoder.config.num_hidden_layers + 1)] if all_layers else []
    if pooled == POOLED_OUTPUT:
        return [POOLED_OUTPUT, PROMPT_OUTPUT[0], *layers]
    return [PROMPT_OUTPUT[0], *layers, *([pooled] if pooled else [])]


class _T5Encoder(torch.nn.Module):
    """T5's encoder: its last hidden state (Optimum's `t5-encoder` export)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids):
        return self.encoder(input_ids).last_hidden_state


class _VaeDecoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


class _VaeEncoder(torch.nn.Module):
    """The posterior's parameters, mean and log-variance concatenated along channels (B, 2C, h, w): the
    runtime samples from it (or takes the mean) with its own random numbers."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image, return_dict=False)[0].parameters


def default_graphs(source) -> list[GraphSpec]:
    """The source pipeline's own graphs: text encoder(s), the denoiser (as its backbone adapter describes it),
    VAE decoder and encoder."""
    graphs = []
    for encoder in source.text_encoder_graphs():
        if encoder.kind == "t5":
            wrapper, outputs = _T5Encoder(encoder.encoder), [PROMPT_OUTPUT[0]]
        else:
            pooled = encoder.pooled_output if encoder.pooled else None
            wrapper = _TextEncoder(encoder.encoder, all_layers=encoder.all_layers, pooled=pooled)
            outputs = text_encoder_outputs(encoder.encoder, encoder.all_layers, pooled)
        axes = {name: {0: "batch"} for name in ["input_ids", *outputs]}
        ids = torch.zeros(2, encoder.max_length, dtype=torch.int64)
        graphs.append(GraphSpec(encoder.name, TEXT_ENCODER, encoder.name, wrapper, {"input_ids": ids}, outputs, axes,
                                scope="/encoder/", details={"tokenizer": encoder.tokenizer_folder}))
    graphs.append(source.backbone.denoiser_graph(source))
    vae = source.pipeline.vae
    g = torch.Generator().manual_seed(0)
    image_axes = {0: "batch", 2: "height", 3: "width"}
    latent = torch.randn(1, vae.config.latent_channels, 8, 8, generator=g)
    latent_name, image_name = LATENT_INPUT[0], IMAGE_IO[0]
    graphs.append(GraphSpec("vae_decoder", VAE_DECODER, "vae", _VaeDecoder(vae), {latent_name: latent}, [image_name],
                            {latent_name: image_axes, image_name: image_axes}, scope="/vae/"))
    image = torch.rand(1, vae.config.in_channels, 8 * source.pipeline.vae_scale_factor,
                       8 * source.pipeline.vae_scale_factor, generator=g) * 2 - 1
    graphs.append(GraphSpec("vae_encoder", VAE_ENCODER, "vae", _VaeEncoder(vae), {image_name: image},
                            [POSTERIOR_OUTPUT], {image_name: image_axes, POSTERIOR_OUTPUT: image_axes},
                            scope="/vae/"))
    return graphs


def graph_set(source) -> list[GraphSpec]:
    """Every graph the artifact will hold: the pipeline's own, then those the passes added; a pass's graph of
    the same name as one of the pipeline's takes its place (the cache pass's full denoiser, for example)."""
    added = {spec.name: spec for spec in source.outputs.graphs}
    own = [added.pop(spec.name, spec) for spec in default_graphs(source)]
    return own + list(added.values())


def _rms_norm(g, x, normalized_shape, weight, eps):
    """aten::rms_norm (torch.nn.RMSNorm: FLUX's query and key norms), which opset 17 lacks, in the ops it has:
    x / sqrt(mean(x², last dims) + eps) * weight, eps defaulting to float32's."""
    from torch.onnx import symbolic_helper as helper

    dims = helper._maybe_get_const(normalized_shape, "is")
    eps = float(torch.finfo(torch.float32).eps) if helper._is_none(eps) else helper._maybe_get_const(eps, "f")
    mean = g.op("ReduceMean", g.op("Mul", x, x), axes_i=list(range(-len(dims), 0)), keepdims_i=1)
    out = g.op("Div", x, g.op("Sqrt", g.op("Add", mean, g.op("Constant", value_t=torch.tensor(eps)))))
    return out if helper._is_none(weight) else g.op("Mul", out, weight)


torch.onnx.register_custom_op_symbolic("aten::rms_norm", _rms_norm, OPSET)


def export_graph(spec: GraphSpec) -> onnx.ModelProto:
    return trace(spec.wrapper, tuple(spec.inputs.values()), list(spec.inputs), spec.outputs, spec.dynamic_axes)


def trace(module, args, input_names, output_names, dynamic_axes) -> onnx.ModelProto:
    """torch -> ONNX in memory, weights loaded (the exporter spills >2 GB models to files)."""
    with tempfile.TemporaryDirectory(prefix="sdopt-export-") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # diffusers' shape asserts; shapes are dynamic
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
        return drop_identity_casts(onnx.load(str(path), load_external_data=True))


def drop_identity_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove Casts of a graph input to the type it already has (FLUX's `timestep.to(dtype)`): OpenVINO folds them
    and gives the input the cast's output name too, which optimum-intel then takes for the input's name."""
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    renamed = {}
    for node in list(model.graph.node):
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and node.input[0] in inputs and to == inputs[node.input[0]] \
                and node.output[0] not in outputs:
            renamed[node.output[0]] = node.input[0]
            model.graph.node.remove(node)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    return model


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph's float tensors and weights as fp16 (for GPU engines that take fp16 graphs: strongly typed
    TensorRT, ONNX Runtime CUDA), with ONNX Runtime's converter. Inputs and outputs stay float32, so the
    runtime and the manifest see the same signature; Q/DQ pairs stay float32 (opset 17 quantizes float32),
    with casts around them."""
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )

    with tempfile.TemporaryDirectory(prefix="sdopt-fp16-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns of every weight it clamps to fp16's range
        path = Path(tmp) / "model.onnx"  # from a file, its shape inference takes graphs over protobuf's 2 GiB
        onnx.save_model(model, str(path), save_as_external_data=True, location="weights", size_threshold=1024)
        return convert_float_to_float16(str(path), keep_io_types=True,
                                        op_block_list=DEFAULT_OP_BLOCK_LIST + ["QuantizeLinear", "DequantizeLinear"])


def save_model(model: onnx.ModelProto, folder: Path, external_data: bool = False) -> list[str]:
    """Write `model.onnx` (+ `model.onnx_data` when its weights pass EXTERNAL_DATA_THRESHOLD, or always with
    `external_data`).

    Returns the file names written."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_bytes = sum(_tensor_bytes(t) for t in model.graph.initializer)
    if external_data or weight_bytes > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=EXTERNAL_DATA_NAME, size_threshold=1024)
        os.chmod(folder / EXTERNAL_DATA_NAME, 0o666 & ~umask())  # onnx writes it private; the graph beside it is not
        return ["model.onnx", EXTERNAL_DATA_NAME]
    onnx.save_model(model, str(folder / "model.onnx"))
    return ["model.onnx"]


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.raw_data:
        return len(t.raw_data)
    import numpy as np

    return int(np.prod(t.dims, dtype=np.int64)) * 4
