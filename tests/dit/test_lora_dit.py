"""A LoRA trained here (peft on the transformer's attention) fuses into SD3 and FLUX artifacts and changes their
image as diffusers' own `load_lora_weights` + `fuse_lora` does."""

import pytest
import torch

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr
from sdopt.contract.sampling import pack_latents
from sdopt.runtime.pipeline import Pipeline

PROMPT, STEPS = "a red circle", 3


def _lora_file(pipe_class, folder, out):
    """A rank-4 LoRA of the transformer's attention projections with random (non-zero) B: it changes the image."""
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = pipe_class.from_pretrained(folder)
    torch.manual_seed(7)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.mul_(4.0)
    pipe_class.save_lora_weights(str(out), transformer_lora_layers=get_peft_model_state_dict(pipe.transformer),
                                 safe_serialization=True)
    return out / "pytorch_lora_weights.safetensors"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_lora_fuses_into_a_transformer_as_diffusers_fuses_it(request, tmp_path, family):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    pipe_class, folder = {"sd3": (StableDiffusion3Pipeline, request.getfixturevalue("sd3_folder")),
                          "flux": (FluxPipeline, request.getfixturevalue("flux_dev_folder"))}[family]
    lora = _lora_file(pipe_class, folder, tmp_path)
    artifact = tmp_path / "fused"
    assert main(["compress", "--model", str(folder), "--lora", f"{lora}:0.8", "--out", str(artifact)]) == 0
    ours_pipe = Pipeline(artifact)
    noise = ours_pipe.initial_noise(0, 64, 64)
    ours = ours_pipe(PROMPT, noise=noise, steps=STEPS, height=64, width=64).image_float

    reference = pipe_class.from_pretrained(folder)
    reference.load_lora_weights(str(lora))
    reference.fuse_lora(lora_scale=0.8)
    latents = torch.from_numpy(pack_latents(noise) if family == "flux" else noise)
    with torch.no_grad():
        theirs = reference(PROMPT, latents=latents, num_inference_steps=STEPS, height=64, width=64,
                           guidance_scale=ours_pipe.info["guidance"], output_type="np").images[0]
        plain = pipe_class.from_pretrained(folder)(PROMPT, latents=latents, num_inference_steps=STEPS, height=64,
                                                   width=64, guidance_scale=ours_pipe.info["guidance"],
                                                   output_type="np").images[0]
    assert psnr(theirs * 255, ours * 255) >= 35.0
    assert psnr(plain * 255, theirs * 255) < 35.0  # the LoRA changes the image
