"""The one conversion between what a denoiser predicts and the clean latent and noise it implies, shared by the
training objectives (torch tensors) and the runtime's numpy schedulers: plain arithmetic, so it works on either.

A noisy sample is x_t = alpha * x0 + sigma * noise, with alpha = sqrt(abar), sigma = sqrt(1 - abar) for the
variance-preserving models (DDPM, DDIM, DPM-Solver's alpha_t, sigma_t), and alpha = 1 - t, sigma = t for flow
matching. A sampler that keeps x in the variance-exploding form x = x0 + s * noise (Euler) passes the
variance-preserving sample x / sqrt(s^2 + 1) with alpha = 1 / sqrt(s^2 + 1), sigma = s * alpha (`from_sigma`).
"""

from __future__ import annotations

KINDS = ("epsilon", "v_prediction", "sample", "flow")


def x0_and_noise(kind: str, output, sample, alpha, sigma):
    """(clean latent, noise) that a model output of prediction type `kind` implies at (sample, alpha, sigma)."""
    if kind == "epsilon":
        return (sample - sigma * output) / alpha, output
    if kind == "v_prediction":
        return alpha * sample - sigma * output, alpha * output + sigma * sample
    if kind == "sample":
        return output, (sample - alpha * output) / sigma
    if kind == "flow":  # the velocity noise - x0, with alpha = 1 - sigma
        return sample - sigma * output, sample + alpha * output
    raise ValueError(f"unknown prediction type {kind!r}; known: {', '.join(KINDS)}")


def training_target(kind: str, x0, noise, alpha, sigma):
    """What a model of prediction type `kind` should output for x_t = alpha * x0 + sigma * noise."""
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return alpha * noise - sigma * x0
    if kind == "sample":
        return x0
    if kind == "flow":
        return noise - x0
    raise ValueError(f"unknown prediction type {kind!r}; known: {', '.join(KINDS)}")


def from_sigma(sigma):
    """(alpha, sigma) of the variance-preserving form for a variance-exploding noise level s."""
    alpha = 1 / (sigma**2 + 1) ** 0.5
    return alpha, sigma * alpha
