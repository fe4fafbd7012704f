"""Each quantization format exports Q/DQ that compute what modelopt's fake quant computes."""

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from sdopt.backbones.unet import UNET
from sdopt.compress import modelopt_state as quantizers
from sdopt.compress.quantize import QuantizeConfig, modelopt_config
from sdopt.contract.errors import SdoptError
from sdopt.export import onnx as onnx_export
from sdopt.export import qdq
from sdopt.runtime.backends.onnxruntime import EXACT_INT8_OPTIONS


class _Block(torch.nn.Module):
    """Conv, Linear on a 3-D input (MatMul) and on a 2-D input (Gemm): the three forms a UNet exports.
    20 conv input channels: int4 groups of 8 leave a partial last group."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(20, 16, 3, padding=1)
        self.proj = torch.nn.Linear(16, 24)
        self.head = torch.nn.Linear(24, 5)

    def forward(self, x):  # (B, 20, H, W)
        h = torch.nn.functional.silu(self.conv(x))  # (B, 16, H, W)
        h = self.proj(h.flatten(2).transpose(1, 2))  # (B, H*W, 24)
        return self.head(h.mean(1))  # (B, 5)


CASES = {
    "int8": QuantizeConfig(skip=()),
    "int8-smoothquant": QuantizeConfig(skip=(), smoothquant=0.5, weight_bits=8),
    "fp8": QuantizeConfig(format="fp8", skip=()),
    "w4a8-awq": QuantizeConfig(format="w4a8", skip=(), group_size=8),
    "w4a8-max": QuantizeConfig(format="w4a8", skip=(), group_size=8, awq=False),
}


def _quantized_block(config):
    import modelopt.torch.quantization as mtq

    torch.manual_seed(0)
    block = _Block().eval()
    batches = [torch.randn(2, 20, 6, 6) * torch.linspace(0.1, 3, 20).reshape(1, -1, 1, 1) for _ in range(4)]
    mtq.quantize(block, modelopt_config(config, UNET), lambda m: [m(b) for b in batches])
    layers = quantizers.collect_layers(block)
    assert [layer.module for layer in layers] == ["conv", "proj", "head"]
    with quantizers.quantizers_disabled(block):
        model = onnx_export.trace(block, (batches[0],), ["x"], ["y"], {"x": {0: "batch"}})
    qdq.insert_qdq(model, layers, scope="/")
    return block, model


@pytest.mark.parametrize("case", CASES)
def test_qdq_graph_matches_fake_quant_torch(case):
    """Per layer the Q/DQ graph computes exactly what modelopt's fake quant computes.

    (A whole quantized UNet is chaotic: a 1e-6 relative change of every quantizer's input moves its
    output by about as much as quantization itself (tests/compress/test_unet_parity.py), so the exact
    check is made here, layer by layer.)"""
    block, model = _quantized_block(CASES[case])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=EXACT_INT8_OPTIONS)
    torch.manual_seed(1)
    x = torch.randn(3, 20, 6, 6) * 2  # some values beyond the calibrated range: saturation must agree
    with torch.no_grad():
        ref = block(x).numpy()
        with quantizers.quantizers_disabled(block):
            float_out = block(x).numpy()
    (ours,) = session.run(None, {"x": x.numpy()})
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(float_out - ref).max() > 1e-3 * np.abs(ref).max()  # and it is quantized


def _initializers(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_int8_form():
    _, model = _quantized_block(CASES["int8"])
    ops = qdq.count_ops(model)
    # inputs of 3 layers + the conv's output; 3 weights, 1 int32 bias, 4 activations
    assert ops["QuantizeLinear"] == 4 and ops["DequantizeLinear"] == 8 and ops["Gemm"] == 1
    assert model.opset_import[0].version == onnx_export.OPSET


def test_smoothquant_scales_linear_inputs():
    _, model = _quantized_block(CASES["int8-smoothquant"])
    inits = _initializers(model)
    by_output = {o: n for n in model.graph.node for o in n.output}
    for layer in ("proj", "head"):
        q = next(n for n in model.graph.node if n.name == f"/{layer}/MatMul/input/QuantizeLinear"
                 or n.name == f"/{layer}/Gemm/input/QuantizeLinear")
        mul = by_output[q.input[0]]  # x * per-channel smoothing scale, then quantized
        assert mul.op_type == "Mul"
        scale = next(inits[i] for i in mul.input if i in inits)
        assert scale.ndim == 1 and not np.allclose(scale, 1)


def test_fp8_form():
    _, model = _quantized_block(CASES["fp8"])
    assert model.opset_import[0].version == 19
    inits = {t.name: t for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(q) == 3 and len(dq) == 6  # no output quantizers, no int32 bias for fp8
    for node in q + dq:
        assert inits[node.input[2]].data_type == onnx.TensorProto.FLOAT8E4M3FN
    weights = [numpy_helper.to_array(inits[n.input[0]]) for n in dq if n.input[0] in inits]
    assert len(weights) == 3 and all(w.dtype == ml_dtypes.float8_e4m3fn for w in weights)
    assert max(float(np.abs(w.astype(np.float32)).max()) for w in weights) == 448  # per-channel amax -> 448


def test_w4a8_form():
    _, model = _quantized_block(CASES["w4a8-awq"])
    assert model.opset_import[0].version == 21
    inits = _initializers(model)
    weight_dq = {n.name.split("/")[1]: n for n in model.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    attrs = {k: {a.name: a.i for a in n.attribute} for k, n in weight_dq.items()}
    assert all(a["block_size"] == 8 for a in attrs.values())
    conv_w, conv_s = inits[weight_dq["conv"].input[0]], inits[weight_dq["conv"].input[1]]
    assert conv_w.dtype == ml_dtypes.int4 and conv_w.shape == (16, 20, 3, 3)
    assert conv_s.shape == (16, 3, 3, 3) and attrs["conv"]["axis"] == 1  # 20 channels -> 3 groups of 8
    proj_s = inits[weight_dq["proj"].input[1]]
    assert proj_s.shape == (2, 24) and attrs["proj"]["axis"] == 0  # MatMul weight is (in, out)
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(activation_q) == 3 and all(inits[n.input[2]].dtype == np.int8 for n in activation_q)


def test_raise_opset_moves_reduce_axes_to_an_input():
    from onnx import helper

    node = helper.make_node("ReduceMean", ["x"], ["y"], name="mean", axes=[1], keepdims=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    qdq.raise_opset(model, 21)
    onnx.checker.check_model(model)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x.mean(1))


def test_a_partial_graph_quantizes_the_layers_it_holds():
    """A second graph of part of a module (a cache pass's shallow UNet) takes Q/DQ for its own layers; the
    full graph must hold every quantized layer."""
    import dataclasses

    import modelopt.torch.quantization as mtq

    torch.manual_seed(0)
    block = _Block().eval()
    batches = [torch.randn(2, 20, 6, 6) for _ in range(2)]
    mtq.quantize(block, modelopt_config(CASES["int8"], UNET), lambda m: [m(b) for b in batches])
    layers = quantizers.collect_layers(block)
    absent = dataclasses.replace(layers[0], module="not_in_this_graph")
    with quantizers.quantizers_disabled(block):
        model = onnx_export.trace(block, (batches[0],), ["x"], ["y"], {"x": {0: "batch"}})
    full = onnx.ModelProto()
    full.CopyFrom(model)
    with pytest.raises(SdoptError, match="not_in_this_graph"):
        qdq.insert_qdq(full, [*layers, absent], scope="/")
    placed = qdq.insert_qdq(model, [*layers, absent], scope="/", require_all=False)
    assert [layer.module for layer in placed] == ["conv", "proj", "head"]
    assert qdq.count_ops(model)["DequantizeLinear"] >= 3
