"""Structured pruning of the UNet: whole blocks removed (BK-SDM), from any UNet2DConditionModel config.

Block presets, each a new diffusers config derived from the teacher's:
    none   every block kept (channel pruning alone)
    base   one ResNet (+attention) pair fewer per stage (at least one kept) and no mid block (BK-SDM-Base)
    small  base without the innermost stage, down and up (BK-SDM-Tiny's further cut)
    tiny   small without attention at the highest resolution (as SDXL's top level)
The student is initialised from the teacher's kept blocks: the same down layers from the front of each
stage, the up layers that read the same skip tensors (the last ones of each stage), every tensor whose shape
matches; what has no counterpart keeps diffusers' initialisation (the manifest counts both).

Channel pruning (`macs` < 1, `compress/channels.py`) then narrows every ResNet block until the UNet's MACs are
`macs` times the unpruned UNet's (to the nearest GroupNorm group per block).

A pruned UNet needs distillation to draw again: the `distill` pass follows it in the `prune-*` recipes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from sdopt.calibration.trajectory import CalibrationConfig, check_calibration
from sdopt.compress import channels
from sdopt.errors import SdoptError
from sdopt.passes import register

PRESETS = ("none", "base", "small", "tiny")


@dataclass(frozen=True)
class PruneConfig:
    blocks: str = "base"  # none | base | small | tiny
    macs: float = 1.0  # < 1: channel pruning down to this share of the unpruned UNet's MACs
    importance: str = "magnitude"  # of channels: magnitude | taylor
    calibration: CalibrationConfig = field(default_factory=lambda: CalibrationConfig(num_prompts=8))  # taylor's

    def __post_init__(self):
        if self.blocks not in PRESETS:
            raise SdoptError(f"prune: blocks '{self.blocks}'; choose one of {', '.join(PRESETS)}")
        if not 0 < self.macs <= 1:
            raise SdoptError(f"prune: macs {self.macs} must lie in (0, 1]")
        if self.importance not in channels.IMPORTANCE:
            raise SdoptError(f"prune: importance '{self.importance}'; choose one of {', '.join(channels.IMPORTANCE)}")
        if self.blocks == "none" and self.macs == 1:
            raise SdoptError("prune: blocks none and macs 1 prune nothing")


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

    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
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


def unet_macs(unet, inputs: dict) -> int:
    """Multiply-accumulates of one UNet call on `inputs` (convolutions, linear layers, attention matmuls), counted
    with torch's FLOP counter (which counts 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sdopt.compress.denoiser import run_unet

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run_unet(unet, inputs)
    return counter.get_total_flops() // 2


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def check(source, config: PruneConfig) -> None:
    student_config({k: v for k, v in dict(source.pipeline.unet.config).items() if not k.startswith("_")},
                   config.blocks)
    if config.macs < 1 and config.importance == "taylor":
        check_calibration(source, config.calibration)


def narrow(source, teacher, student, inputs: dict, before_macs: int, config: PruneConfig) -> dict:
    """Channel-prune `student` to `config.macs` of the teacher's MACs: one share of every block's groups."""
    block_args, conv_macs, current = channels.block_calls(student, inputs)
    prunable = max(1, sum(conv_macs.values()))
    excess = current - config.macs * before_macs
    if excess <= 0:
        return {"ratio": 0.0, "widths": {}}
    ratio = excess / prunable
    if ratio > channels.MAX_RATIO:
        reachable = (current - channels.MAX_RATIO * prunable) / before_macs
        raise SdoptError(f"prune: macs {config.macs} is out of reach of channel pruning here (down to "
                         f"{reachable:.2f} of the unpruned UNet's MACs with blocks {config.blocks})")
    if config.importance == "taylor":
        from sdopt.compress.denoiser import record_unet_calls

        records = record_unet_calls(source, config.calibration)  # the teacher's trajectories
        channels.denoising_gradients(student, teacher, records, dict(source.pipeline.scheduler.config))
    widths = channels.prune_channels(student, block_args, ratio, config.importance)
    return {"ratio": round(ratio, 4), "widths": widths}


def apply(source, config: PruneConfig):
    start = time.perf_counter()
    pipe = source.pipeline
    teacher = pipe.unet
    inputs = source.unet_example_inputs(latent_hw=(source.height // pipe.vae_scale_factor,) * 2)
    before = {"parameters": parameter_count(teacher), "macs": unet_macs(teacher, inputs)}
    if config.blocks == "none":
        student, counts = copy.deepcopy(teacher), {"copied": parameter_count(teacher), "initialised": 0}
    else:
        student, counts = remove_blocks(teacher, config.blocks)
    narrowed = narrow(source, teacher, student, inputs, before["macs"], config) if config.macs < 1 else None
    source.teachers.setdefault("unet", teacher)
    pipe.unet = student.eval()
    after = {"parameters": parameter_count(student), "macs": unet_macs(student, inputs)}
    extra = {} if narrowed is None else {"macs_target": config.macs, "importance": config.importance,
                                         "channel_ratio": narrowed["ratio"], "channel_widths": narrowed["widths"]}
    source.records.append({"pass": "prune", "blocks": config.blocks, "before": before, "after": after,
                           "macs_at": f"{source.width}x{source.height}, batch 2", **counts, **extra,
                           "seconds": round(time.perf_counter() - start, 2)})
    return source


register("prune", PruneConfig, apply, check=check, before=("quantize", "cache"))
