"""Structured pruning of the denoiser: whole blocks removed (BK-SDM), from any config of a family whose backbone
adapter knows its block structure (`pruned_config`, `remove_blocks`).

Block presets (`none`, `base`, `small`, `tiny`; BK-SDM's), each a new config derived from the teacher's: what
each removes, and how the student is initialised from the teacher's kept blocks, is the adapter's (docs/backbones.md);
the manifest counts the copied and the initialised parameters.

Channel pruning (`macs` < 1, `compress/channels.py`) then narrows the blocks the adapter names (`resnet_blocks`)
until the denoiser's MACs are `macs` times the unpruned one's (to the nearest GroupNorm group per block).

A pruned denoiser needs distillation to draw again: the `distill` pass follows it in the `prune-*` recipes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from sdopt.backbones import backbone_of
from sdopt.calibration.trajectory import CalibrationConfig, check_calibration
from sdopt.compress import channels
from sdopt.compress.registry import register
from sdopt.contract.errors import SdoptError

PRESETS = ("none", "base", "small", "tiny")


@dataclass(frozen=True)
class PruneConfig:
    blocks: str = "base"  # none | base | small | tiny
    macs: float = 1.0  # < 1: channel pruning down to this share of the unpruned denoiser's MACs
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


def denoiser_macs(model, inputs: dict, backbone=None) -> int:
    """Multiply-accumulates of one denoiser call on `inputs` (convolutions, linear layers, attention matmuls),
    counted with torch's FLOP counter (which counts 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = backbone or backbone_of(model)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        backbone.call(model, inputs)
    return counter.get_total_flops() // 2


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def check(source, config: PruneConfig) -> None:
    backbone = source.backbone
    needed = (["pruned_config", "remove_blocks"] if config.blocks != "none" else []) \
        + (["resnet_blocks"] if config.macs < 1 else [])
    missing = [name for name in needed if getattr(backbone, name, None) is None]
    if missing:
        raise SdoptError(f"prune: the {backbone.family} backbone does not say how to prune it (no {missing[0]})")
    if config.blocks != "none":  # none keeps the config as it is
        backbone.pruned_config(source.denoiser, config.blocks)
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
                         f"{reachable:.2f} of the unpruned denoiser's MACs with blocks {config.blocks})")
    if config.importance == "taylor":
        from sdopt.compress.trajectories import record_denoiser_calls

        records = record_denoiser_calls(source, config.calibration)  # the teacher's trajectories
        channels.denoising_gradients(student, teacher, records, dict(source.pipeline.scheduler.config))
    widths = channels.prune_channels(student, block_args, ratio, config.importance)
    return {"ratio": round(ratio, 4), "widths": widths}


def apply(source, config: PruneConfig):
    start = time.perf_counter()
    pipe, backbone = source.pipeline, source.backbone
    teacher = backbone.denoiser(pipe)
    inputs = source.example_inputs(latent_hw=(source.height // pipe.vae_scale_factor,) * 2)
    before = {"parameters": parameter_count(teacher), "macs": denoiser_macs(teacher, inputs, backbone)}
    if config.blocks == "none":
        student, counts = copy.deepcopy(teacher), {"copied": parameter_count(teacher), "initialised": 0}
    else:
        student, counts = backbone.remove_blocks(teacher, config.blocks)
    narrowed = narrow(source, teacher, student, inputs, before["macs"], config) if config.macs < 1 else None
    source.outputs.teachers.setdefault(backbone.component, teacher)
    backbone.replace(pipe, student.eval())
    after = {"parameters": parameter_count(student), "macs": denoiser_macs(student, inputs, backbone)}
    extra = {} if narrowed is None else {"macs_target": config.macs, "importance": config.importance,
                                         "channel_ratio": narrowed["ratio"], "channel_widths": narrowed["widths"]}
    source.outputs.records.append({"pass": "prune", "blocks": config.blocks, "before": before, "after": after,
                           "macs_at": f"{source.width}x{source.height}, batch 2", **counts, **extra,
                           "seconds": round(time.perf_counter() - start, 2)})
    return source


register("prune", PruneConfig, apply, check=check, before=("quantize", "cache"))
