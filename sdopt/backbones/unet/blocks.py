"""The block structure of a UNet2DConditionModel that structured pruning and feature distillation use
(`compress/prune.py`, `compress/channels.py` and `compress/distill.py` are the passes).

Block presets (BK-SDM), each a new diffusers config derived from the teacher's:
    none   every block kept (channel pruning alone)
    base   one ResNet (+attention) pair fewer per stage (at least one kept) and no mid block (BK-SDM-Base)
    small  base without the innermost stage, down and up (BK-SDM-Tiny's further cut)
    tiny   small without attention at the highest resolution (as SDXL's top level)
The student is initialised from the teacher's kept blocks: the same down layers from the front of each
stage, the up layers that read the same skip tensors (the last ones of each stage), every tensor whose shape
matches; what has no counterpart keeps diffusers' initialisation.

Channel pruning narrows the ResNet blocks whose inner width can go (`resnet_blocks`); feature distillation
matches the outputs of the stages a pruned UNet shares with its teacher (`stage_features`, `shared_stages`).
"""

from __future__ import annotations

import torch

from sdopt.contract.errors import SdoptError


def diffusers_config(unet) -> dict:
    """The UNet's diffusers config without diffusers' private keys: what builds the same architecture."""
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


def student_config(config: dict, preset: str) -> dict:
    """The pruned UNet's diffusers config."""
    c = dict(config)
    if preset == "none":
        return c
    levels = len(c["block_out_channels"])
    per_level = {key: _per_level(c[key], levels) for key in ("layers_per_block", "transformer_layers_per_block")
                 if key in c and c[key] is not None}
    per_level["layers_per_block"] = [max(1, n - 1) for n in per_level["layers_per_block"]]
    c["mid_block_type"] = None
    keep = levels - 1 if preset in ("small", "tiny") else levels
    if keep < 2 and preset in ("small", "tiny"):
        raise SdoptError(f"prune: blocks {preset} removes the innermost stage; this UNet has only {levels}")
    down, up = list(c["down_block_types"])[:keep], list(c["up_block_types"])[levels - keep:]
    if preset == "tiny":
        down[0], up[-1] = "DownBlock2D", "UpBlock2D"
    c.update(down_block_types=down, up_block_types=up, block_out_channels=list(c["block_out_channels"])[:keep])
    for key in ("attention_head_dim", "num_attention_heads", "cross_attention_dim", "transformer_layers_per_block",
                "layers_per_block", "reverse_transformer_layers_per_block"):
        value = per_level.get(key, c.get(key))
        if isinstance(value, (list, tuple)):
            reverse = key == "reverse_transformer_layers_per_block"
            c[key] = list(value)[levels - keep:] if reverse else list(value)[:keep]
    return c


def _per_level(value, levels: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def teacher_name(student_key: str, teacher, student) -> str:
    """The teacher's parameter that a student parameter starts from (the same name unless a block moved)."""
    parts = student_key.split(".")
    if parts[0] == "up_blocks":
        removed = len(teacher.up_blocks) - len(student.up_blocks)
        k = int(parts[1])
        parts[1] = str(k + removed)
        if len(parts) > 3 and parts[2] in ("resnets", "attentions"):
            shift = len(teacher.up_blocks[k + removed].resnets) - len(student.up_blocks[k].resnets)
            parts[3] = str(int(parts[3]) + shift)  # the up layers that read the same skips: the last ones
    return ".".join(parts)


def remove_blocks(unet, preset: str):
    """(student UNet, {"copied": n, "initialised": n} parameter counts)."""
    from diffusers import UNet2DConditionModel

    config = diffusers_config(unet)
    with torch.random.fork_rng():  # a seeded init: the same student, and distillation checkpoint key, each run
        torch.manual_seed(0)
        student = UNet2DConditionModel(**student_config(config, preset)).eval()
    teacher_state = unet.state_dict()
    state, counts = student.state_dict(), {"copied": 0, "initialised": 0}
    for key, value in state.items():
        source = teacher_state.get(teacher_name(key, unet, student))
        if source is not None and source.shape == value.shape:
            state[key] = source.clone()
            counts["copied"] += value.numel()
        else:
            counts["initialised"] += value.numel()
    student.load_state_dict(state)
    return student, counts


def resnet_blocks(unet) -> dict[str, torch.nn.Module]:
    """The UNet's ResNet blocks whose inner width can go (the time embedding added, not scale-shift)."""
    from diffusers.models.resnet import ResnetBlock2D

    return {name: m for name, m in unet.named_modules()
            if isinstance(m, ResnetBlock2D) and m.time_embedding_norm == "default" and m.norm2.num_groups > 1}


def stage_features(unet, found: dict):
    """Hooks recording each stage's output under its name: a down block's before its downsampler (a pruned
    UNet's new last block has none), a mid or up block's own output."""
    handles = []
    for i, block in enumerate(unet.down_blocks):
        last = (getattr(block, "attentions", None) or block.resnets)[-1]
        handles.append(last.register_forward_hook(_record(found, f"down_blocks.{i}")))
    for i, block in enumerate(unet.up_blocks):
        handles.append(block.register_forward_hook(_record(found, f"up_blocks.{i}")))
    if unet.mid_block is not None:
        handles.append(unet.mid_block.register_forward_hook(_record(found, "mid_block")))
    return handles


def _record(found: dict, name: str):
    def hook(_module, _args, output):
        found[name] = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
    return hook


def shared_stages(teacher, student) -> dict[str, str]:
    """Student stage -> teacher stage with the same role: down blocks by index from the top, up blocks by
    index from the bottom of the teacher's (pruning removes the innermost up blocks first), the mid block."""
    pairs = {f"down_blocks.{i}": f"down_blocks.{i}" for i in range(len(student.down_blocks))}
    removed = len(teacher.up_blocks) - len(student.up_blocks)
    pairs.update({f"up_blocks.{k}": f"up_blocks.{k + removed}" for k in range(len(student.up_blocks))})
    if student.mid_block is not None and teacher.mid_block is not None:
        pairs["mid_block"] = "mid_block"
    return pairs
