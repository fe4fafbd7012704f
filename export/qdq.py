"""Quantized layers (`sdopt.contract.quantization.LayerQuant`) -> standard ONNX QuantizeLinear/DequantizeLinear.

Form: symmetric (zero point 0), the explicit-quantization form TensorRT accepts and ONNX Runtime runs.
Weights are stored quantized (int8, float8e4m3fn, or int4) with per-output-channel scales, or for
int4 with one scale per group of input channels (blocked DequantizeLinear, opset 21); each quantized
layer's activation input gets a per-tensor Q -> DQ pair (int8 or float8e4m3fn, opset 19).
Nodes are found by the module path the exporter writes into node names.

Timestep-interval scales: an activation with one scale per timestep interval takes its scale from
a constant table, indexed by the interval of the graph's timestep input, computed in the graph as
clip(floor(t * K / T), 0, K - 1), with K / T in float32 as `sdopt.contract.sampling.interval_per_timestep` gives it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from sdopt.contract.errors import SdoptError
from sdopt.contract.quantization import Format, IntervalIndex, LayerQuant
from sdopt.contract.sampling import interval_per_timestep


def insert_qdq(model: onnx.ModelProto, layers: list[LayerQuant], scope: str,
               interval: IntervalIndex | None = None, require_all: bool = True) -> list[LayerQuant]:
    """Quantize the graph's Conv/MatMul/Gemm nodes of `layers`, in place. `scope` is the node-name prefix
    of the wrapped module (the backbone's graph scope); `interval` is needed when layers carry interval tables. A graph
    of part of the module (`require_all=False`) quantizes the layers it holds. Returns those layers."""
    graph = model.graph
    if any(layer.input_table is not None for layer in layers) and (interval is None or interval.intervals < 2):
        raise SdoptError("interval activation scales need the graph's timestep input and interval count")
    by_name = {n.name: n for n in graph.node}
    found = [(layer, _find_node(by_name, scope, layer.module)) for layer in layers]
    missing = [layer.module for layer, node in found if node is None]
    if missing and require_all:
        raise SdoptError(f"no Conv/MatMul/Gemm node for quantized layer {missing[0]} in the exported graph")
    found = [(layer, node) for layer, node in found if node is not None]
    layers = [layer for layer, _ in found]
    has_tables = any(layer.input_table is not None for layer in layers)
    index_nodes = _interval_index_nodes(graph, interval) if has_tables else []
    initializers = {t.name: t for t in graph.initializer}
    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # position in graph -> nodes inserted before it
    after_nodes: dict[int, list[onnx.NodeProto]] = {}  # position in graph -> nodes inserted after it
    position = {id(n): i for i, n in enumerate(graph.node)}
    activation_qdq: dict[tuple[str, float], str] = {}

    for layer, node in found:
        before = new_nodes.setdefault(position[id(node)], [])
        weight = initializers.get(node.input[1])
        if weight is None:
            raise SdoptError(f"layer {layer.module}: weight of node {node.name} is not a constant")
        q, scales, dq_attributes = _quantize_weight(node, numpy_helper.to_array(weight), layer)
        base = weight.name
        graph.initializer.remove(weight)
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{base}_quantized"),
            numpy_helper.from_array(scales, f"{base}_scale"),
            numpy_helper.from_array(np.zeros(scales.shape, layer.weight_format.dtype), f"{base}_zero_point"),
        ])
        before.append(helper.make_node("DequantizeLinear", [f"{base}_quantized", f"{base}_scale",
                                                            f"{base}_zero_point"], [base],
                                       name=f"{node.name}/weight/DequantizeLinear", **dq_attributes))

        input_scale = layer.input_scale if layer.input_table is None else layer.input_table
        key = (node.input[0], np.asarray(input_scale, np.float32).tobytes())
        if key not in activation_qdq:
            activation_qdq[key] = _add_activation_qdq(graph, before, node, input_scale, layer.activation_format)
        node.input[0] = activation_qdq[key]
        if layer.output_scale is not None:
            # an int32 bias needs int8 operands and one constant input scale
            if layer.input_table is None and layer.weight_format.name == layer.activation_format.name == "int8":
                before.extend(_quantize_bias(graph, initializers, node, layer))
            output_scale = layer.output_scale if layer.output_table is None else layer.output_table
            after_nodes[position[id(node)]] = _add_output_qdq(graph, node, output_scale, layer.activation_format)

    opset = max((max(layer.weight_format.opset, layer.activation_format.opset) for layer in layers), default=0)
    if opset > _default_opset(model):
        raise_opset(model, opset)
    ordered = list(index_nodes)
    for i, node in enumerate(graph.node):
        ordered.extend(new_nodes.get(i, []))
        ordered.append(node)
        ordered.extend(after_nodes.get(i, []))
    del graph.node[:]
    graph.node.extend(ordered)
    return layers


INTERVAL_INDEX = "timestep_interval"
INTERVAL_PREFIX = f"{INTERVAL_INDEX}/"  # names of the index nodes and their constants


def _interval_index_nodes(graph, interval: IntervalIndex) -> list:
    """timestep (B,) -> its first element's interval, an int64 scalar named INTERVAL_INDEX."""
    k, T = interval.intervals, interval.num_train_timesteps
    name = INTERVAL_PREFIX
    graph.initializer.extend([
        numpy_helper.from_array(np.array(0, np.int64), f"{name}first"),
        numpy_helper.from_array(np.array(interval_per_timestep(k, T)), f"{name}per_timestep"),
        numpy_helper.from_array(np.array(0, np.float32), f"{name}low"),
        numpy_helper.from_array(np.array(k - 1, np.float32), f"{name}high"),
    ])
    return [
        helper.make_node("Gather", [interval.timestep_input, f"{name}first"], [f"{name}t"], name=f"{name}Gather", axis=0),
        helper.make_node("Cast", [f"{name}t"], [f"{name}t_float"], name=f"{name}Cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [f"{name}t_float", f"{name}per_timestep"], [f"{name}scaled"], name=f"{name}Mul"),
        helper.make_node("Floor", [f"{name}scaled"], [f"{name}floor"], name=f"{name}Floor"),
        helper.make_node("Clip", [f"{name}floor", f"{name}low", f"{name}high"], [f"{name}clipped"], name=f"{name}Clip"),
        helper.make_node("Cast", [f"{name}clipped"], [INTERVAL_INDEX], name=f"{name}ToIndex", to=onnx.TensorProto.INT64),
    ]


def _scale_tensor(graph, prefix: str, scale) -> tuple[str, list]:
    """A constant scale initializer, or for a (K,) table a Gather of the timestep's interval."""
    scale = np.asarray(scale, np.float32)
    if scale.ndim == 0:
        graph.initializer.append(numpy_helper.from_array(scale, f"{prefix}_scale"))
        return f"{prefix}_scale", []
    graph.initializer.append(numpy_helper.from_array(scale, f"{prefix}_scale_table"))
    gather = helper.make_node("Gather", [f"{prefix}_scale_table", INTERVAL_INDEX], [f"{prefix}_scale"],
                              name=f"{prefix}/scale/Gather", axis=0)
    return f"{prefix}_scale", [gather]


def _qdq_pair(graph, prefix: str, tensor: str, scale, output: str, fmt: Format) -> list:
    """tensor -> QuantizeLinear -> DequantizeLinear -> output, per-tensor symmetric; `scale` is a
    float or a (K,) table of interval scales."""
    scale_name, nodes = _scale_tensor(graph, prefix, scale)
    graph.initializer.append(numpy_helper.from_array(np.array(0, fmt.dtype), f"{prefix}_zero_point"))
    return nodes + [helper.make_node("QuantizeLinear", [tensor, scale_name, f"{prefix}_zero_point"],
                             [f"{prefix}_quantized"], name=f"{prefix}/QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{prefix}_quantized", f"{prefix}_scale", f"{prefix}_zero_point"],
                             [output], name=f"{prefix}/DequantizeLinear")]


def _add_activation_qdq(graph, before: list, node, scale, fmt: Format) -> str:
    prefix = f"{node.name}/input"
    before.extend(_qdq_pair(graph, prefix, node.input[0], scale, f"{prefix}_dequantized", fmt))
    return f"{prefix}_dequantized"


def _add_output_qdq(graph, node, scale, fmt: Format) -> list:
    """Conv -> Q -> DQ -> consumers: the pattern ONNX Runtime fuses into an integer convolution."""
    output = node.output[0]
    prefix = f"{node.name}/output"
    node.output[0] = f"{prefix}_float"
    return _qdq_pair(graph, prefix, f"{prefix}_float", scale, output, fmt)


def _quantize_weight(node, w: np.ndarray, layer: LayerQuant) -> tuple[np.ndarray, np.ndarray, dict]:
    """Graph weight -> (quantized values, scales laid out for the graph's weight, DequantizeLinear attributes)."""
    axis = _output_channel_axis(node, w)
    out_channels = w.shape[axis]
    if layer.weight_scales.shape[0] != out_channels:
        raise SdoptError(f"layer {layer.module}: {layer.weight_scales.shape[0]} weight scales for "
                         f"{out_channels} output channels")
    if layer.group_size is None:
        shape = [1] * w.ndim
        shape[axis] = -1
        scales = layer.weight_scales.astype(np.float32)
        return layer.weight_format.quantize(w, scales.reshape(shape)), scales, {"axis": axis}
    # groups run along the input channels: axis 1 of a Conv / transposed Gemm weight, else the other one
    scales = layer.weight_scales.astype(np.float32)
    if node.op_type == "Conv":
        group_axis = 1
    else:
        group_axis = 1 - axis
        if axis == 1:  # MatMul / Gemm without transB store (in, out): scales (groups, out)
            scales = scales.T
    expanded = np.repeat(scales, layer.group_size, axis=group_axis)
    expanded = np.take(expanded, np.arange(w.shape[group_axis]), axis=group_axis)
    q = layer.weight_format.quantize(w, expanded)
    return q, np.ascontiguousarray(scales), {"axis": group_axis, "block_size": layer.group_size}


def _quantize_bias(graph, initializers: dict, node, layer: LayerQuant) -> list:
    """Bias as int32 with scale input_scale * weight_scale: the standard form of a quantized conv
    (its rounding error is below float32 resolution of the accumulator)."""
    if len(node.input) < 3 or not node.input[2]:
        return []
    bias = initializers[node.input[2]]
    scales = (np.float32(layer.input_scale) * layer.weight_scales).astype(np.float32)
    q = np.rint(numpy_helper.to_array(bias) / scales).astype(np.int32)
    base = bias.name
    graph.initializer.remove(bias)
    graph.initializer.extend([
        numpy_helper.from_array(q, f"{base}_quantized"),
        numpy_helper.from_array(scales, f"{base}_scale"),
        numpy_helper.from_array(np.zeros(scales.size, np.int32), f"{base}_zero_point"),
    ])
    return [helper.make_node("DequantizeLinear", [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                             [base], name=f"{node.name}/bias/DequantizeLinear", axis=0)]


def _find_node(by_name: dict, scope: str, module: str):
    path = scope + onnx_scope(module)
    return next((by_name[f"{path}/{op}"] for op in ("Conv", "MatMul", "Gemm") if f"{path}/{op}" in by_name), None)


def onnx_scope(module: str) -> str:
    """Module path -> the exporter's node scope: "up_blocks.1.attentions.0.proj_in" ->
    "up_blocks.1/attentions.0/proj_in" (list indices stay attached to their container)."""
    parts: list[str] = []
    for part in module.split("."):
        if part.isdigit() and parts:
            parts[-1] += "." + part
        else:
            parts.append(part)
    return "/".join(parts)


def _output_channel_axis(node, weight: np.ndarray) -> int:
    if node.op_type == "MatMul":
        return 1  # the exporter stores a Linear's weight transposed: (in, out)
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0  # Conv: (out, in, kh, kw)


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# Operators whose newer versions (up to opset 21) only add types or optional attributes/inputs
# with defaults that keep the opset-17 meaning, so a graph using them may declare a higher opset.
_UNCHANGED_MEANING = {"Cast", "Constant", "ConstantOfShape", "DequantizeLinear", "QuantizeLinear", "Equal",
                      "Reshape", "Resize", "Shape", "Transpose", "Unsqueeze", "Squeeze", "Identity", "Split",
                      "Pad", "Flatten", "Size"}
_REDUCE_AXES_INPUT = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}  # opset 18: axes became an input


def raise_opset(model: onnx.ModelProto, opset: int) -> None:
    """Declare a higher default-domain opset (fp8 Q/DQ need 19, int4 blocks 21), rewriting the
    reductions whose axes moved from attribute to input in opset 18."""
    from onnx import defs

    current = _default_opset(model)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _REDUCE_AXES_INPUT:
            axes = next((a for a in node.attribute if a.name == "axes"), None)
            if axes is not None:
                name = f"{node.name or node.output[0]}/axes"
                model.graph.initializer.append(numpy_helper.from_array(np.array(axes.ints, np.int64), name))
                node.input.append(name)
                node.attribute.remove(axes)
            continue
        changed = defs.get_schema(node.op_type, opset).since_version > current
        if changed and node.op_type not in _UNCHANGED_MEANING:
            raise SdoptError(f"cannot raise the graph to opset {opset}: {node.op_type} changed meaning after "
                             f"opset {current}")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
