"""Each exported fp32 component matches torch on the same inputs (max relative error <= 1e-4)."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sdopt.backbones.unet.convention import run_unet
from sdopt.export import onnx as onnx_export
from sdopt.sources.source import load_source

TOLERANCE = 1e-4


def max_relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def run_onnx(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v for k, v in feeds.items()})


@pytest.fixture(scope="module", params=["arch:tiny", "sd21_folder", "sdxl_folder"])
def source(request):
    spec = request.param if request.param.startswith("arch:") else str(request.getfixturevalue(request.param))
    return load_source(spec)


def graphs(source, role):
    return [onnx_export.export_graph(g) for g in onnx_export.default_graphs(source) if g.role == role]


def test_text_encoders(source):
    ids = torch.tensor([source.tokenizers[0]("a blue square", padding="max_length", max_length=77).input_ids,
                        source.tokenizers[0]("", padding="max_length", max_length=77).input_ids])
    for i, model in enumerate(graphs(source, "text_encoder")):
        outputs = run_onnx(model, {"input_ids": ids.numpy()})
        with torch.no_grad():
            out = source.text_encoders[i](ids, output_hidden_states=True)
        if source.kind == "sdxl":  # as Optimum exports them: [text_embeds,] last_hidden_state, hidden_states.0..N
            expected = ([out.text_embeds] if i == 1 else []) + [out.last_hidden_state, *out.hidden_states]
        else:
            expected = [out.last_hidden_state]
        assert len(outputs) == len(expected)
        for ours, ref in zip(outputs, expected):
            assert max_relative_error(ours, ref.numpy()) <= TOLERANCE


@pytest.mark.parametrize("batch,latent_hw", [(2, (8, 8)), (1, (16, 8))])
def test_unet_dynamic_shapes(source, batch, latent_hw):
    (model,) = graphs(source, "denoiser")
    inputs = source.example_inputs(batch=batch, latent_hw=latent_hw)
    (ours,) = run_onnx(model, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        ref = run_unet(source.pipeline.unet, inputs)
    assert ours.shape == tuple(ref.shape)
    assert max_relative_error(ours, ref.numpy()) <= TOLERANCE


def test_vae_decoder(source):
    (model,) = graphs(source, "vae_decoder")
    latent = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(5))
    (ours,) = run_onnx(model, {"latent_sample": latent.numpy()})
    with torch.no_grad():
        ref = source.pipeline.vae.decode(latent, return_dict=False)[0]
    assert ours.shape == (1, 3, 64, 128)
    assert max_relative_error(ours, ref.numpy()) <= TOLERANCE


def test_vae_encoder(source):
    """The posterior's mean and log-variance, as diffusers' AutoencoderKL.encode gives them."""
    (model,) = graphs(source, "vae_encoder")
    image = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(6)) * 2 - 1
    (ours,) = run_onnx(model, {"sample": image.numpy()})
    with torch.no_grad():
        posterior = source.pipeline.vae.encode(image, return_dict=False)[0]
    assert ours.shape == (2, 8, 8, 16)
    assert max_relative_error(ours[:, :4], posterior.mean.numpy()) <= TOLERANCE
    assert max_relative_error(ours[:, 4:], posterior.logvar.numpy()) <= TOLERANCE


def test_head_sliced_attention_matches_torch(source):
    """The UNet and VAE decoder exported one attention head at a time compute what the batched form does,
    with one softmax per head and guidance batch and image size still dynamic."""
    from sdopt.backbones.attention import attention_form

    specs = {g.role: g for g in onnx_export.default_graphs(source)}
    with attention_form(specs["denoiser"].wrapper, "head-sliced") as changed:
        unet = onnx_export.export_graph(specs["denoiser"])
    heads = sum(m.heads for m in source.pipeline.unet.modules() if hasattr(m, "set_processor"))
    assert changed > 0 and sum(n.op_type == "Softmax" for n in unet.graph.node) == heads
    inputs = source.example_inputs(batch=1, latent_hw=(16, 8))
    (ours,) = run_onnx(unet, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        ref = run_unet(source.pipeline.unet, inputs)
    assert max_relative_error(ours, ref.numpy()) <= TOLERANCE
    with attention_form(specs["vae_decoder"].wrapper, "head-sliced"):
        decoder = onnx_export.export_graph(specs["vae_decoder"])
    latent = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(5))
    (ours,) = run_onnx(decoder, {"latent_sample": latent.numpy()})
    with torch.no_grad():
        ref = source.pipeline.vae.decode(latent, return_dict=False)[0]
    assert max_relative_error(ours, ref.numpy()) <= TOLERANCE
    assert all(type(m.processor).__name__ != "HeadSlicedAttention"  # the source's own processors are back
               for m in source.pipeline.unet.modules() if hasattr(m, "set_processor"))
