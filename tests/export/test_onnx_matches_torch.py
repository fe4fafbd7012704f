"""Each exported fp32 component matches torch on the same inputs (max relative error <= 1e-4)."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sdopt.export import onnx as onnx_export
from sdopt.sources import load_source

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


def test_text_encoders(source):
    ids = torch.tensor([source.tokenizers[0]("a blue square", padding="max_length", max_length=77).input_ids,
                        source.tokenizers[0]("", padding="max_length", max_length=77).input_ids])
    for i, graph in enumerate(onnx_export.export_text_encoders(source)):
        outputs = run_onnx(graph.model, {"input_ids": ids.numpy()})
        with torch.no_grad():
            out = source.text_encoders[i](ids, output_hidden_states=True)
        if source.kind == "sdxl":
            expected = [out.hidden_states[-2]] + ([out[0]] if i == 1 else [])
        else:
            expected = [out[0]]
        assert len(outputs) == len(expected)
        for ours, ref in zip(outputs, expected):
            assert max_relative_error(ours, ref.numpy()) <= TOLERANCE


@pytest.mark.parametrize("batch,latent_hw", [(2, (8, 8)), (1, (16, 8))])
def test_unet_dynamic_shapes(source, batch, latent_hw):
    graph = onnx_export.export_unet(source)
    inputs = onnx_export.unet_example_inputs(source, batch=batch, latent_hw=latent_hw)
    (ours,) = run_onnx(graph.model, {k: v.numpy() for k, v in inputs.items()})
    added = {k: inputs[k] for k in ("text_embeds", "time_ids") if k in inputs} or None
    with torch.no_grad():
        ref = source.pipeline.unet(inputs["sample"], inputs["timestep"],
                                   encoder_hidden_states=inputs["encoder_hidden_states"],
                                   added_cond_kwargs=added, return_dict=False)[0]
    assert ours.shape == tuple(ref.shape)
    assert max_relative_error(ours, ref.numpy()) <= TOLERANCE


def test_vae_decoder(source):
    graph = onnx_export.export_vae_decoder(source)
    latent = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(5))
    (ours,) = run_onnx(graph.model, {"latent": latent.numpy()})
    with torch.no_grad():
        ref = source.pipeline.vae.decode(latent, return_dict=False)[0]
    assert ours.shape == (1, 3, 64, 128)
    assert max_relative_error(ours, ref.numpy()) <= TOLERANCE
