"""The tiny VAE decoder: TAESD's size for SD's VAE, distilled from the model's own decoder, the artifact's
default decoder with the full one kept beside it, and equal to its ONNX export."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sdopt.app.cli import main
from sdopt.compress.tiny_vae import TinyVaeConfig, tiny_decoder, training_inputs
from sdopt.runtime.pipeline import Pipeline
from sdopt.sources.archs import ARCHS

PROMPT = "a large red circle in the top left"


def test_the_tiny_decoder_of_sd_is_taesd_sized():
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**ARCHS["sd15"].vae)
        decoder = tiny_decoder(vae, TinyVaeConfig())
    assert 1.0e6 < sum(p.numel() for p in decoder.parameters()) < 1.5e6
    latent = torch.zeros(1, 4, 8, 8)
    shaped = tiny_decoder(AutoencoderKL(**{**ARCHS["tiny"].vae}), TinyVaeConfig())
    factor = 2 ** (len(ARCHS["tiny"].vae["block_out_channels"]) - 1)
    assert shaped(latent).shape == (1, 3, 8 * factor, 8 * factor)


def test_training_inputs_are_crops_and_augmented_mixtures_of_them():
    latents = torch.arange(2 * 4 * 12 * 10, dtype=torch.float32).reshape(2, 4, 12, 10)
    rng = np.random.default_rng(0)
    plain = training_inputs(latents, TinyVaeConfig(crop=6, batch=16, augment=False), rng)
    assert plain.shape == (16, 4, 6, 6)
    windows = latents.unfold(2, 6, 1).unfold(3, 6, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 4, 6, 6)
    assert all((windows == crop).all(dim=(1, 2, 3)).any() for crop in plain)
    mixed = training_inputs(latents, TinyVaeConfig(crop=6, batch=16), rng)
    assert mixed.shape == (16, 4, 6, 6) and not all((windows == c).all(dim=(1, 2, 3)).any() for c in mixed)
    assert training_inputs(latents, TinyVaeConfig(crop=32, batch=2), rng).shape == (2, 4, 12, 10)


def test_the_generations_follow_the_calibration_settings():
    from sdopt.calibration.trajectory import CalibrationConfig
    from sdopt.compress.trajectories import generate_latents
    from sdopt.sources.source import load_source

    latents, text, empty = generate_latents(load_source("tiny-shapes"), CalibrationConfig(num_prompts=2, size=64,
                                                                                           steps=2), seeds=2)
    assert latents.shape == (4, 4, 16, 16) and text.shape[0] == 4 and empty.shape[0] == 1
    assert not torch.equal(latents[0], latents[1])  # a seed each


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-vae") / "a"
    assert main(["compress", "--recipe", "tiny-vae", "--set", "tiny-vae.train_steps=40", "--set", "tiny-vae.seeds=1",
                 "--set", "tiny-vae.calibration.num_prompts=4", "--out", str(out)]) == 0
    return out


def test_the_tiny_decoder_learns_and_replaces_the_default(tiny, tmp_path):
    manifest = json.loads((tiny / "manifest.json").read_text())
    roles = {name: c["role"] for name, c in manifest["components"].items()}
    assert roles["vae_decoder"] == "vae_decoder" and roles["vae_decoder_full"] == "vae_decoder_full"
    record = next(r for r in manifest["passes"] if r["pass"] == "tiny-vae")
    assert record["train_steps"] == 40 and record["loss_last"] < 0.5 * record["loss_first"]
    assert (record["latents"], record["heldout_latents"]) == (3, 1) and np.isfinite(record["heldout_psnr_db"])
    default, full = Pipeline(tiny), Pipeline(tiny, vae="full")
    a, b = default(PROMPT, steps=4, guidance=2.0), full(PROMPT, steps=4, guidance=2.0)
    np.testing.assert_array_equal(a.latents, b.latents)
    assert not np.array_equal(a.image, b.image)
    png = tmp_path / "a.png"
    assert main(["run", str(tiny), "--prompt", PROMPT, "--vae", "full", "--out", str(png)]) == 0


def test_the_tiny_graph_equals_the_torch_decoder(tiny):
    from sdopt.calibration.trajectory import CalibrationConfig
    from sdopt.compress.tiny_vae import apply
    from sdopt.sources.source import load_source

    config = TinyVaeConfig(train_steps=40, seeds=1, calibration=CalibrationConfig(num_prompts=4))
    source = apply(load_source("tiny-shapes"), config)  # resumes the fixture's finished checkpoint
    decoder = next(g.wrapper for g in source.outputs.graphs if g.name == "vae_decoder")
    session = ort.InferenceSession(str(tiny / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    latent = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    image = session.run(None, {"latent_sample": latent})[0]
    with torch.no_grad():
        expected = decoder(torch.from_numpy(latent)).numpy()
    assert image.shape == (2, 3, 32, 32) and np.abs(image - expected).max() <= 1e-4
