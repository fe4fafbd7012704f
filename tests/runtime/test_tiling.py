"""Tiled VAE decoding: exact for a local decoder, close to the whole decode for the model's real one."""

import numpy as np
import pytest

from sdopt.app.evaluate import psnr
from sdopt.contract.errors import SdoptError
from sdopt.runtime.tiling import decode_tiled


def _upsample(z):  # a local decoder: each latent pixel becomes a 4x4 block of its first three channels
    return z[:, :3].repeat(4, axis=2).repeat(4, axis=3)


@pytest.mark.parametrize("shape", [(8, 8), (13, 21), (4, 30)])
def test_tiles_blend_back_to_the_whole_for_a_local_decoder(shape):
    z = np.random.default_rng(0).standard_normal((1, 4, *shape)).astype(np.float32)
    np.testing.assert_allclose(decode_tiled(_upsample, z, 4, 4), _upsample(z), rtol=0, atol=1e-6)


def test_tiled_decode_of_the_real_decoder_is_close(tmp_path):
    from sdopt.app.evaluate import fp32_export
    from sdopt.runtime.pipeline import Pipeline

    folder = fp32_export("tiny-shapes")
    latents = Pipeline(folder)("a large red circle in the top left", steps=8, guidance=2.0).latents
    latents = np.concatenate([latents, latents[:, :, ::-1]], axis=2)  # a taller image: 16x8 latents
    whole, tiled = Pipeline(folder).decode(latents), Pipeline(folder, vae_tile=32).decode(latents)
    assert whole.shape == tiled.shape == (64, 32, 3)
    assert psnr((whole * 255).round(), (tiled * 255).round()) > 25
    with pytest.raises(SdoptError, match="a multiple of 16 pixels"):
        Pipeline(folder, vae_tile=20)
