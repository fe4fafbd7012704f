"""The one prediction-type conversion against diffusers: the clean latent each scheduler derives from a model
output (DDPMScheduler's step) and the training target (DDPMScheduler.get_velocity, FlowMatch's noise - x0)."""

import numpy as np
import pytest
import torch

from sdopt.contract.prediction import from_sigma, training_target, x0_and_noise


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_clean_latent_is_the_one_ddpm_predicts(kind):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(prediction_type=kind, clip_sample=False)
    scheduler.set_timesteps(1000)
    g = torch.Generator().manual_seed(0)
    sample, output = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = 600
    a = scheduler.alphas_cumprod[t]
    x0, noise = x0_and_noise(kind, output, sample, a.sqrt(), (1 - a).sqrt())
    expected = scheduler.step(output, t, sample, generator=g).pred_original_sample
    torch.testing.assert_close(x0, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.sqrt() * x0 + (1 - a).sqrt() * noise, sample, rtol=1e-5, atol=1e-5)


def test_targets_invert_to_their_clean_latent_and_noise():
    from diffusers import DDPMScheduler

    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for kind, (alpha, sigma) in [("epsilon", (0.8, 0.6)), ("v_prediction", (0.6, 0.8)), ("sample", (0.3, 0.95)),
                                 ("flow", (0.25, 0.75)), ("epsilon", from_sigma(2.0))]:
        sample = alpha * x0 + sigma * noise
        got = x0_and_noise(kind, training_target(kind, x0, noise, alpha, sigma), sample, alpha, sigma)
        np.testing.assert_allclose(got, (x0, noise), atol=1e-12)
    scheduler = DDPMScheduler(prediction_type="v_prediction")
    t = torch.tensor([300])
    x0_t, noise_t = torch.from_numpy(x0).float().view(2, 3, 1, 1), torch.from_numpy(noise).float().view(2, 3, 1, 1)
    a = scheduler.alphas_cumprod[t]
    torch.testing.assert_close(training_target("v_prediction", x0_t, noise_t, a.sqrt(), (1 - a).sqrt()),
                               scheduler.get_velocity(x0_t, noise_t, t))


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown prediction type 'x'"):
        x0_and_noise("x", 1.0, 1.0, 1.0, 0.0)
