"""sdopt.runtime.schedulers against diffusers: whole trajectories fed identical model outputs.

Each implementation runs its own trajectory (errors accumulate as they would in a pipeline); the
tolerance per step is max|ours - diffusers| <= 1e-5 * max(1, max|diffusers sample|).
"""

import subprocess
import sys

import numpy as np
import pytest

from sdopt.contract.errors import SdoptError
from sdopt.runtime.schedulers import make_scheduler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

REL_TOL = 1e-5
SHAPE = (2, 4, 8, 8)  # batch-shaped latents

SD15 = {  # runwayml/stable-diffusion-v1-5 ships PNDMScheduler's config
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD15_LEADING = {**SD15, "timestep_spacing": "leading", "prediction_type": "epsilon"}
SD21 = {  # stabilityai/stable-diffusion-2-1
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SDXL = {  # stabilityai/stable-diffusion-xl-base-1.0
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
SDXL_TRAILING = {**SDXL, "timestep_spacing": "trailing"}
LINSPACE = {"beta_schedule": "linear", "timestep_spacing": "linspace", "clip_sample": False}
# cosine betas, x0 prediction, DDIM's default clipping; timestep_spacing is listed as defaulted, so each
# class uses its own default (DDIM leading, Euler/DPM linspace) as diffusers' from_config does
COSINE_SAMPLE = {
    "_class_name": "DDIMScheduler",
    "_use_default_values": ["timestep_spacing"],
    "timestep_spacing": "trailing",
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "sample",
}
TRAINED_BETAS = {
    "trained_betas": (np.linspace(0.0002, 0.015, 1000) ** 1.2).tolist(),
    "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
}
ZERO_SNR = {**SD15, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "steps_offset": 0,
            "prediction_type": "v_prediction"}
CONFIGS = {
    "zero-terminal-snr": ZERO_SNR,
    "sd15": SD15,
    "sd15-leading": SD15_LEADING,
    "sd21-v": SD21,
    "sdxl-leading": SDXL,
    "sdxl-trailing": SDXL_TRAILING,
    "linspace": LINSPACE,
    "cosine-sample": COSINE_SAMPLE,
    "trained-betas": TRAINED_BETAS,
}
DIFFUSERS_CLASSES = {
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "dpmpp": diffusers.DPMSolverMultistepScheduler,
}
STEPS = [1, 4, 20, 25]


def run_both(name, config, steps, start=0, seed=0, tol=REL_TOL):
    """Run one trajectory in each implementation, from timesteps[start] on (img2img-like when start > 0);
    return the max error relative to the sample scale."""
    ours = make_scheduler(name, config)
    ref = DIFFUSERS_CLASSES[name].from_config(config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)

    ref_t = ref.timesteps.numpy()
    assert ours.timesteps.dtype == ref_t.dtype
    np.testing.assert_array_equal(ours.timesteps, ref_t)
    # torch's float32 sqrt on CPU is not always correctly rounded (1 ulp off numpy's for ~20% of sigmas)
    assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-6)

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(SHAPE, dtype=np.float32)
    x = noise * np.float32(ours.init_noise_sigma)
    x_ref = torch.from_numpy(noise) * ref.init_noise_sigma
    worst = 0.0
    for t, t_ref in zip(ours.timesteps[start:], ref.timesteps[start:]):
        model_in = ours.scale_model_input(x, t)
        model_in_ref = ref.scale_model_input(x_ref, t_ref).numpy()
        scale = max(1.0, float(np.abs(model_in_ref).max()))
        np.testing.assert_allclose(model_in, model_in_ref, rtol=0, atol=tol * scale)

        model_output = rng.standard_normal(SHAPE, dtype=np.float32)
        x = ours.step(model_output, t, x)
        x_ref = ref.step(torch.from_numpy(model_output), t_ref, x_ref).prev_sample
        assert x.dtype == np.float32 and x.shape == SHAPE
        expected = x_ref.numpy()
        err = float(np.abs(x - expected).max()) / max(1.0, float(np.abs(expected).max()))
        assert err <= tol, f"step at t={t}: relative error {err:.2e}"
        worst = max(worst, err)
    return worst


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("name", DIFFUSERS_CLASSES)
def test_trajectory_matches_diffusers(name, config, steps):
    # Euler's first step from a zero-terminal-SNR schedule starts at sigma = 4096 (diffusers' 2**-24 floor):
    # a 1-ulp difference in sigma moves the result by ~1e-4 of its scale, in float32 either way
    ill_conditioned = name == "euler" and config.get("rescale_betas_zero_snr")
    run_both(name, config, steps, tol=2e-4 if ill_conditioned else REL_TOL)


# sigma_min as final sigma makes lower_order_final depend on the step count (< 15), heun the 2nd-order
# correction; lambda_min_clipped cuts the noisiest timesteps (SD's lambda(999) is about -2.7)
DPM_VARIANTS = {
    "sigma-min": {**SD15, "final_sigmas_type": "sigma_min"},
    "sigma-min-no-lof": {**SD15, "final_sigmas_type": "sigma_min", "lower_order_final": False},
    "heun": {**SDXL, "solver_type": "heun"},
    "order-1": {**SD21, "solver_order": 1},
    "lambda-clipped": {**SD15, "lambda_min_clipped": -2.0, "timestep_spacing": "leading"},
    "unipc-config": {"_class_name": "UniPCMultistepScheduler", **LINSPACE, "solver_type": "bh2"},
}


@pytest.mark.parametrize("steps", [4, 20])
@pytest.mark.parametrize("config", DPM_VARIANTS.values(), ids=DPM_VARIANTS.keys())
def test_dpmpp_variants_match_diffusers(config, steps):
    run_both("dpmpp", config, steps)


@pytest.mark.parametrize("config", [{**SDXL, "final_sigmas_type": "sigma_min"}, {**SD21, "steps_offset": 0}])
def test_euler_variants_match_diffusers(config):
    run_both("euler", config, 10)


@pytest.mark.parametrize("name", DIFFUSERS_CLASSES)
def test_trajectory_started_mid_schedule_matches_diffusers(name):
    run_both(name, SD15, 20, start=8)


@pytest.mark.parametrize("name", DIFFUSERS_CLASSES)
def test_set_timesteps_resets_state(name):
    s = make_scheduler(name, SDXL)
    rng = np.random.default_rng(1)
    outputs = rng.standard_normal((8, *SHAPE), dtype=np.float32)

    def trajectory():
        s.set_timesteps(8)
        x = np.ones(SHAPE, np.float32)
        for t, eps in zip(s.timesteps, outputs):
            x = s.step(eps, t, x)
        return x

    first = trajectory()
    np.testing.assert_array_equal(trajectory(), first)


def test_unknown_name():
    with pytest.raises(SdoptError, match="unknown scheduler 'pndm'; choose one of ddim, euler, dpmpp, lcm"):
        make_scheduler("pndm", SD15)


@pytest.mark.parametrize("name", DIFFUSERS_CLASSES)
@pytest.mark.parametrize("steps", [0, 1001])
def test_bad_step_count(name, steps):
    s = make_scheduler(name, SD15)
    with pytest.raises(SdoptError, match="num_inference_steps"):
        s.set_timesteps(steps)


@pytest.mark.parametrize(
    "name, option",
    [
        ("ddim", {"thresholding": True}),
        ("euler", {"use_karras_sigmas": True}),
        ("euler", {"interpolation_type": "log_linear"}),
        ("dpmpp", {"use_karras_sigmas": True}),
        ("dpmpp", {"algorithm_type": "sde-dpmsolver++"}),
        ("dpmpp", {"prediction_type": "flow_prediction"}),
        ("dpmpp", {"solver_order": 3}),
        ("dpmpp", {"beta_schedule": "sigmoid"}),
    ],
)
def test_unsupported_options_are_refused(name, option):
    with pytest.raises(SdoptError, match=next(iter(option))):
        make_scheduler(name, {**SD15, **option})


def test_options_of_other_classes_are_ignored():
    # DDIM's clip_sample / set_alpha_to_one mean nothing to Euler; PNDM's skip_prk_steps to anyone
    s = make_scheduler("euler", {**SD15, "clip_sample": True, "skip_prk_steps": False})
    assert "clip_sample" not in s.config and "skip_prk_steps" not in s.config


def test_module_does_not_import_torch():
    code = "import sys, sdopt.runtime.schedulers; assert not {'torch', 'diffusers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
@pytest.mark.parametrize("config", [SD15, SD21, SDXL], ids=["sd15", "sd21-v", "sdxl"])
@pytest.mark.parametrize("name", DIFFUSERS_CLASSES)
def test_img2img_start_and_add_noise_match_diffusers(name, config, strength):
    """Where img2img starts (diffusers' StableDiffusionImg2ImgPipeline.get_timesteps), the noised image
    latents there, and the trajectory on from them."""
    steps = 20
    ours, ref = make_scheduler(name, config), DIFFUSERS_CLASSES[name].from_config(config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    start = max(steps - min(int(steps * strength), steps), 0)
    assert ours.start_index(strength) == start
    ours.set_begin_index(start)
    if hasattr(ref, "set_begin_index"):
        ref.set_begin_index(start * ref.order)
    rng = np.random.default_rng(4)
    image_latents, noise = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(2))
    x = ours.add_noise(image_latents, noise, ours.timesteps[start])
    x_ref = ref.add_noise(torch.from_numpy(image_latents), torch.from_numpy(noise), ref.timesteps[start:start + 1])
    np.testing.assert_allclose(x, x_ref.numpy(), rtol=0, atol=REL_TOL * float(np.abs(x_ref.numpy()).max()))
    for t, t_ref in zip(ours.timesteps[start:], ref.timesteps[start:]):
        model_output = rng.standard_normal(SHAPE, dtype=np.float32)
        x = ours.step(model_output, t, x)
        ref.scale_model_input(x_ref, t_ref)  # diffusers' Euler expects it before each step
        x_ref = ref.step(torch.from_numpy(model_output), t_ref, x_ref).prev_sample
        scale = max(1.0, float(np.abs(x_ref.numpy()).max()))
        np.testing.assert_allclose(x, x_ref.numpy(), rtol=0, atol=REL_TOL * scale)


LCM_CONFIGS = {"zero-terminal-snr": ZERO_SNR, "sd15": SD15, "sd21-v": SD21,
               "clipped": {**SD15, "clip_sample": True, "original_inference_steps": 25}}


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("config", LCM_CONFIGS.values(), ids=LCM_CONFIGS.keys())
def test_lcm_matches_diffusers_step_by_step(config, steps):
    """Timesteps and every step, its re-noising fed the noise diffusers draws from the same torch generator."""
    ours, ref = make_scheduler("lcm", config), diffusers.LCMScheduler.from_config(config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    rng = np.random.default_rng(steps)
    x = rng.standard_normal(SHAPE, dtype=np.float32)
    x_ref = torch.from_numpy(x)
    drawn, ours_noise = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for i, t in enumerate(ours.timesteps):
        model_output = rng.standard_normal(SHAPE, dtype=np.float32)
        last = i == steps - 1
        noise = None if last else torch.randn(SHAPE, generator=ours_noise).numpy()
        x = ours.step(model_output, t, x, noise=noise)
        x_ref = ref.step(torch.from_numpy(model_output), ref.timesteps[i], x_ref, generator=drawn).prev_sample
        expected = x_ref.numpy()
        err = float(np.abs(x - expected).max()) / max(1.0, float(np.abs(expected).max()))
        assert err <= REL_TOL, f"step {i} at t={t}: relative error {err:.2e}"


def test_lcm_refuses_more_steps_than_its_schedule():
    with pytest.raises(SdoptError, match="more than the 50 of its distillation schedule"):
        make_scheduler("lcm", SD15).set_timesteps(51)
