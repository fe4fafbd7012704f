"""The numpy flow-matching Euler scheduler against diffusers' FlowMatchEulerDiscreteScheduler, for the configs
SD3, SD3.5 and FLUX.1 ship, as their pipelines call it (FLUX: its own sigmas and the image-size shift), 1 to 50
steps: the same sigmas and timesteps, the same trajectory fed identical model outputs, the same flow noising
and img2img start."""

import numpy as np
import pytest

from sdopt.runtime.schedulers import SchedulerError
from sdopt.runtime.schedulers.flow_euler import FlowMatchEulerScheduler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SD3 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
       "num_train_timesteps": 1000, "shift": 3.0}  # stabilityai/stable-diffusion-3-medium-diffusers
SD35 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.32.0.dev0",
        "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 4096,
        "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0, "shift_terminal": None,
        "use_beta_sigmas": False, "use_dynamic_shifting": False, "use_exponential_sigmas": False,
        "use_karras_sigmas": False}  # stabilityai/stable-diffusion-3.5-medium
FLUX_DEV = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0",
            "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
            "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
FLUX_SCHNELL = {**FLUX_DEV, "shift": 1.0, "use_dynamic_shifting": False}
STEPS = (1, 2, 4, 28, 50)
SEQ_LENS = (256, 1024, 4096)  # 256², 512² and 1024² images as FLUX packs them


def _pair(config, steps, seq_len=None):
    """(ours, diffusers') with timesteps set as the model's pipeline sets them."""
    ours = FlowMatchEulerScheduler(config)
    theirs = diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)
    if config is FLUX_DEV or config is FLUX_SCHNELL:  # FluxPipeline: its own sigmas, mu from the token count
        sigmas = np.linspace(1.0, 1 / steps, steps)
        mu = ours.dynamic_shift_mu(seq_len)
        ours.set_timesteps(steps, mu=mu, sigmas=sigmas)
        theirs.set_timesteps(steps, sigmas=sigmas, mu=mu)
    else:
        ours.set_timesteps(steps)
        theirs.set_timesteps(steps)
    return ours, theirs


CASES = [(c, s, n) for c in (SD3, SD35) for s in STEPS for n in (None,)] + \
        [(c, s, n) for c in (FLUX_DEV, FLUX_SCHNELL) for s in STEPS for n in SEQ_LENS]


@pytest.mark.parametrize("config,steps,seq_len", CASES)
def test_same_schedule_and_trajectory_as_diffusers(config, steps, seq_len):
    ours, theirs = _pair(config, steps, seq_len)
    np.testing.assert_array_max_ulp(ours.sigmas, theirs.sigmas.numpy(), maxulp=1)
    np.testing.assert_array_max_ulp(ours.timesteps, theirs.timesteps.numpy(), maxulp=1)
    rng = np.random.default_rng(steps)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    mine, reference = x.copy(), torch.from_numpy(x.copy())
    for t_ours, t_theirs in zip(ours.timesteps, theirs.timesteps):
        velocity = rng.standard_normal(x.shape).astype(np.float32)
        mine = ours.step(velocity, t_ours, mine)
        reference = theirs.step(torch.from_numpy(velocity), t_theirs, reference).prev_sample
        scale = max(1.0, float(reference.abs().max()))
        assert float(np.abs(mine - reference.numpy()).max()) <= 1e-6 * scale


@pytest.mark.parametrize("strength", [0.3, 0.55, 0.75, 1.0])
@pytest.mark.parametrize("steps", [4, 10, 28])
def test_img2img_starts_and_noises_as_the_flow_pipelines(steps, strength):
    ours, theirs = _pair(SD3, steps)
    start = int(max(steps - min(steps * strength, steps), 0))  # SD3 / FLUX img2img's get_timesteps
    assert ours.start_index(strength) == start
    rng = np.random.default_rng(0)
    x0, noise = (rng.standard_normal((1, 16, 8, 8)).astype(np.float32) for _ in range(2))
    theirs.set_begin_index(start)
    expected = theirs.scale_noise(torch.from_numpy(x0), theirs.timesteps[start:start + 1], torch.from_numpy(noise))
    np.testing.assert_allclose(ours.add_noise(x0, noise, ours.timesteps[start]), expected.numpy(), rtol=0, atol=1e-6)


def test_dynamic_shift_needs_mu_and_bad_configs_are_one_error():
    with pytest.raises(SchedulerError, match="give mu"):
        FlowMatchEulerScheduler(FLUX_DEV).set_timesteps(4)
    with pytest.raises(SchedulerError, match="stochastic_sampling"):
        FlowMatchEulerScheduler({**SD3, "stochastic_sampling": True})
    with pytest.raises(SchedulerError, match="shift"):
        FlowMatchEulerScheduler({**SD3, "shift": -1.0})
    with pytest.raises(SchedulerError, match="custom sigmas"):
        FlowMatchEulerScheduler(SD3).set_timesteps(4, sigmas=np.linspace(1.0, 0.0, 4))
