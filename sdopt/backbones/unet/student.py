"""The students latent consistency distillation makes of a UNet2DConditionModel (`compress/lcm.py` is the pass):
the UNet with a guidance embedding in its time embedding (`time_cond_proj_dim`), and the layers an LCM-LoRA
adapts, saved in diffusers' LoRA format."""

from __future__ import annotations

import torch

from sdopt.contract.errors import SdoptError

# The layers an LCM-LoRA adapts: attention, feed-forward, resnet convolutions, the up/down samplers and the
# resnets' time projections
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def guidance_student(teacher, embedding_dim: int):
    """The teacher with a zero-initialised guidance projection in its time embedding: the same outputs."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in dict(teacher.config).items() if not k.startswith("_")}
    student = UNet2DConditionModel(**{**config, "time_cond_proj_dim": embedding_dim})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise SdoptError(f"lcm: the student does not take the teacher's weights ({(missing + unexpected)[:3]})")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.eval()


def save_lora(pipe, folder: str, state: dict) -> None:
    """UNet adapters (peft keys) saved in diffusers' LoRA format (`pytorch_lora_weights.safetensors`) into
    `folder`."""
    type(pipe).save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True)
