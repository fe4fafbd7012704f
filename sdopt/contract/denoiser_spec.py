"""The denoiser spec (`manifest.json` -> `pipeline.denoiser`): what the runtime, builds, bench and eval know of
the denoiser without torch and without guessing from input names. A backbone adapter (`sdopt.backbones`) writes
it at export:

    family            the backbone family ("unet", "mmdit", "flux")
    inputs            each graph input with its role (INPUT_ROLES) and its axes
    latent            layout ("nchw", or "packed-2x2": 2x2 patches as tokens) and the unpacked channels
    prediction        what the denoiser predicts: epsilon, v_prediction, sample or flow (the velocity)
    timestep_domain   [low, high] of the timestep input (0..1000 for DDPM-trained UNets; 0..1 for t / 1000)
    guidance          classifier-free (a negative batch), embedded (the scale is an input) or none
    scheduler_family  ddpm (the variance-preserving samplers) or flow-matching
    text_encoders     per text encoder graph: its tokenizer folder and kind, maximum length, the output the
                      denoiser reads and how the outputs combine: CLIPs side by side along the features, then
                      (SD3) zero-padded to `text_width` and followed along the tokens by T5's output, or by
                      `absent_text_tokens` zero tokens where the artifact has no T5 (diffusers without
                      text_encoder_3); pooled projections side by side; FLUX's CLIP gives its pooled output only
    timestep_input_divisor  the scheduler's timestep is divided by it before the denoiser reads it (FLUX: 1000)
    sigmas            the pipeline's own sigma schedule where it passes one ("linear": FLUX's linspace(1, 1/n, n))

Artifacts written before the spec existed get the one their UNet convention implies (`read`). Torch-free.
"""

from __future__ import annotations

from sdopt.contract import schema as s

INPUT_ROLES = ("latent", "timestep", "text", "pooled_text", "micro_conditions", "guidance_scale", "position_ids",
               "text_position_ids", "cached_feature")
LAYOUTS = ("nchw", "packed-2x2")
PREDICTIONS = ("epsilon", "v_prediction", "sample", "flow")
GUIDANCE = ("classifier-free", "embedded", "none")
SCHEDULER_FAMILIES = ("ddpm", "flow-matching")
TOKENIZERS = ("clip", "t5")
# SDXL's two CLIPs side by side; T5 after CLIP along the tokens (SD3); the pooled output alone (FLUX's CLIP)
COMBINE = ("concat-features", "sequence", "pooled")
SIGMAS = ("linear",)  # the pipeline's own sigmas: linspace(1, 1/steps, steps) (FLUX)

_name = s.string(r"[A-Za-z_][A-Za-z0-9_.]{0,127}", 128)
SCHEMA = s.record({
    "family": s.string(r"[a-z][a-z0-9_-]{0,31}", 32),
    "inputs": s.array(s.record({"name": _name, "role": s.string(choices=INPUT_ROLES),
                                "axes": s.array(s.string(r"[a-z_]{1,32}", 32), 8)}), 32, min_length=1),
    "latent": s.record({"layout": s.string(choices=LAYOUTS), "channels": s.integer(1, 256)}),
    "prediction": s.string(choices=PREDICTIONS),
    "timestep_domain": s.array(s.number(-1e6, 1e6), 2, min_length=2),
    "guidance": s.string(choices=GUIDANCE),
    "scheduler_family": s.string(choices=SCHEDULER_FAMILIES),
    "text_encoders": s.array(s.record({"graph": _name, "tokenizer": s.string(choices=("tokenizer", "tokenizer_2",
                                                                                     "tokenizer_3")),
                                       "kind": s.string(choices=TOKENIZERS), "max_length": s.integer(1, 4096),
                                       "output": _name, "combine": s.string(choices=COMBINE)}), 4),
}, {"text_width": s.integer(1, 65536), "absent_text_tokens": s.integer(1, 4096),
    "timestep_input_divisor": s.number(0, 1e6, low_open=True), "sigmas": s.string(choices=SIGMAS)})

# the UNet convention of artifacts written before the spec: input name -> (role, axes)
UNET_INPUTS = {"sample": ("latent", ["batch", "channels", "height", "width"]), "timestep": ("timestep", ["batch"]),
               "encoder_hidden_states": ("text", ["batch", "tokens", "features"]),
               "text_embeds": ("pooled_text", ["batch", "features"]), "time_ids": ("micro_conditions",
                                                                                   ["batch", "values"]),
               "timestep_cond": ("guidance_scale", ["batch", "features"]),
               "cache_feature": ("cached_feature", ["batch", "channels", "height", "width"])}


def read(manifest: dict, scheduler_config: dict | None = None) -> dict:
    """The artifact's denoiser spec: as written, or for an artifact older than the spec, the one its UNet
    convention implies."""
    info = manifest["pipeline"]
    if "denoiser" in info:
        return info["denoiser"]
    return unet_spec(manifest["components"], info["latent_channels"], scheduler_config or {}, info["max_length"])


def unet_spec(components: dict, latent_channels: int, scheduler_config: dict, max_length: int) -> dict:
    """The spec of a UNet2DConditionModel's graphs (`components`: name -> manifest record with role, inputs and
    outputs) under its DDPM-trained scheduler."""
    from sdopt.contract.graphs import DENOISER, TEXT_ENCODER, prompt_output

    denoiser = next(c for c in components.values() if c["role"] == DENOISER)
    names = [i["name"] for i in denoiser["inputs"]]
    encoders = sorted(n for n, c in components.items() if c["role"] == TEXT_ENCODER)
    return {
        "family": "unet",
        "inputs": [{"name": n, "role": UNET_INPUTS[n][0], "axes": UNET_INPUTS[n][1]} for n in names
                   if n in UNET_INPUTS],
        "latent": {"layout": "nchw", "channels": latent_channels},
        "prediction": scheduler_config.get("prediction_type", "epsilon"),
        "timestep_domain": [0, scheduler_config.get("num_train_timesteps", 1000) - 1],
        "guidance": "embedded" if "timestep_cond" in names else "classifier-free",
        "scheduler_family": "ddpm",
        "text_encoders": [{"graph": n, "tokenizer": components[n].get("tokenizer", "tokenizer"), "kind": "clip",
                           "max_length": max_length,
                           "output": prompt_output([o["name"] for o in components[n]["outputs"]]),
                           "combine": "concat-features"} for n in encoders],
    }


def input_of(spec: dict, role: str) -> dict | None:
    """The spec's input of `role` (the first), or None."""
    return next((i for i in spec["inputs"] if i["role"] == role), None)


def guidance_branches(spec: dict | None) -> int:
    """Denoiser batch rows per image under guidance (a denoiser `spec`): 2 where classifier-free guidance runs a
    negative prompt beside the positive one, 1 where the scale is embedded or there is none. No spec (an
    artifact written before it) counts as classifier-free: never fewer rows than it runs."""
    return 2 if spec is None or spec.get("guidance") == "classifier-free" else 1
