"""Images given to img2img and inpainting, brought to the model's input form (read by `sdopt.contract.image_files`)."""

from __future__ import annotations

import numpy as np


def to_model_input(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], as diffusers' image processor gives it."""
    return (image.astype(np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)[None]


def binary_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (1, 1, H, W) float32 of 0 (keep) and 1 (repaint), binarized at one half as diffusers."""
    return (mask.astype(np.float32) / 255.0 >= 0.5).astype(np.float32)[None, None]


def latent_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """The mask at latent resolution: nearest neighbour, as torch's interpolate(mode="nearest") picks it."""
    return mask[:, :, ::factor, ::factor]


def posterior_mean(parameters: np.ndarray) -> np.ndarray:
    """The VAE encoder's (B, 2C, h, w) mean and log-variance -> the mean (the posterior's mode). diffusers
    samples from the posterior; for SD VAEs its spread is far below a latent step's, and the mean keeps
    img2img deterministic."""
    return parameters[:, : parameters.shape[1] // 2]
