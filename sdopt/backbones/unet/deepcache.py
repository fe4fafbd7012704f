"""DeepCache's split of a UNet2DConditionModel (`compress/cache.py` is the pass): the full UNet, which also
outputs the deep feature at the cache branch, and the shallow path, which takes that feature instead of
computing the deep part again.

Branch numbering is DeepCache's `cache_branch_id`: block B = branch // 3 and layer L = branch % 3, blocks
counted from the shallowest; in the up path the cached part ends before resnet max(0, R - 1 - L) of the
up block that pairs with down block B (R: its resnets), so branch 0 keeps only the last resnet of the last up
block fresh. The shallow graph computes conv_in, the time embedding, the down-path layers whose skip outputs
the fresh up layers read (the first M skip tensors, M the fresh up resnets), those up layers and conv_out: the
values DeepCache computes on a cached step. With the feature of the same step it reproduces the UNet.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch

from sdopt.backbones.unet.convention import run_unet
from sdopt.contract.errors import SdoptError


@dataclass(frozen=True)
class Boundary:
    up_block: int  # index into unet.up_blocks (forward order)
    resnet: int  # first fresh resnet of that block; the feature is its hidden-state input
    skips: int  # skip tensors the fresh up resnets read: the first `skips` of the down path

    @property
    def name(self) -> str:
        return f"up_blocks.{self.up_block}.resnets.{self.resnet}"


def boundary(unet, branch: int) -> Boundary:
    blocks = len(unet.up_blocks)
    block, layer = divmod(branch, 3)
    if block >= blocks:
        raise SdoptError(f"cache: branch {branch} is past this UNet's {blocks} blocks (branches 0 to "
                         f"{3 * blocks - 1})")
    up = blocks - 1 - block
    first = max(0, len(unet.up_blocks[up].resnets) - 1 - layer)
    skips = len(unet.up_blocks[up].resnets) - first + sum(len(b.resnets) for b in unet.up_blocks[up + 1:])
    return Boundary(up, first, skips)


def _attentions(block):
    return getattr(block, "attentions", None) or [None] * len(block.resnets)


def _attend(attention, h, kwargs: dict):
    if attention is None:
        return h
    return attention(h, encoder_hidden_states=kwargs.get("encoder_hidden_states"),
                     cross_attention_kwargs=kwargs.get("cross_attention_kwargs"),
                     attention_mask=kwargs.get("attention_mask"),
                     encoder_attention_mask=kwargs.get("encoder_attention_mask"), return_dict=False)[0]


def _partial_down(block, produce: int):
    """A down block's forward computing only its first `produce` skip outputs; the others are placeholders
    that no fresh layer reads."""
    def forward(hidden_states, temb=None, **kwargs):
        h, outputs = hidden_states, []
        for resnet, attention in zip(block.resnets, _attentions(block)):
            if len(outputs) == produce:
                break
            h = _attend(attention, resnet(h, temb), kwargs)
            outputs.append(h)
        if block.downsamplers is not None and len(outputs) < produce:
            for downsampler in block.downsamplers:
                h = downsampler(h)
            outputs.append(h)
        total = len(block.resnets) + (block.downsamplers is not None)
        return h, tuple(outputs) + (hidden_states.new_zeros(()),) * (total - len(outputs))
    return forward


def _up_from(block, first: int, feature):
    """An up block's forward that starts at resnet `first` with the cached feature as its hidden state."""
    def forward(hidden_states, res_hidden_states_tuple, temb=None, upsample_size=None, **kwargs):
        h, skips = feature, res_hidden_states_tuple
        for j, (resnet, attention) in enumerate(zip(block.resnets, _attentions(block))):
            skip, skips = skips[-1], skips[:-1]
            if j >= first:
                h = _attend(attention, resnet(torch.cat([h, skip], dim=1), temb), kwargs)
        if block.upsamplers is not None:
            for upsampler in block.upsamplers:
                h = upsampler(h, upsample_size)
        return h
    return forward


def _passthrough(hidden_states, *args, **kwargs):
    return hidden_states


@contextlib.contextmanager
def _patched(modules_and_forwards):
    saved = [(module, module.__dict__.get("forward")) for module, _ in modules_and_forwards]
    for module, forward in modules_and_forwards:
        module.forward = forward
    try:
        yield
    finally:
        for module, previous in saved:
            if previous is None:
                del module.forward  # back to the class's forward
            else:
                module.forward = previous


def shallow_forwards(unet, where: Boundary, feature) -> list:
    """(module, forward) pairs that turn the UNet's own forward into the shallow path."""
    patches, left = [], where.skips - 1  # conv_in's output is the first skip tensor
    for block in unet.down_blocks:
        total = len(block.resnets) + (block.downsamplers is not None)
        if left < total:
            patches.append((block, _partial_down(block, max(left, 0))))
        left -= total
    if unet.mid_block is not None:  # a pruned UNet may have none
        patches.append((unet.mid_block, _passthrough))
    patches += [(block, _passthrough) for block in unet.up_blocks[:where.up_block]]
    patches.append((unet.up_blocks[where.up_block], _up_from(unet.up_blocks[where.up_block], where.resnet, feature)))
    return patches


@contextlib.contextmanager
def captured_feature(unet, where: Boundary):
    """Records the boundary's feature (the hidden-state input of its first fresh resnet) during a forward."""
    block, found = unet.up_blocks[where.up_block], {}
    if where.resnet == 0:
        def hook(_module, args, kwargs):
            found["feature"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    else:
        previous = _attentions(block)[where.resnet - 1] or block.resnets[where.resnet - 1]

        def hook(_module, _args, output):
            found["feature"] = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        handle = previous.register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


def _unet_inputs(sample, timestep, encoder_hidden_states, text_embeds, time_ids) -> dict:
    inputs = {"sample": sample, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states}
    if text_embeds is not None:
        inputs.update(text_embeds=text_embeds, time_ids=time_ids)
    return inputs


class FullUNet(torch.nn.Module):
    """The UNet, returning (noise_pred, cache_feature)."""

    def __init__(self, unet, where: Boundary, sdxl: bool):
        super().__init__()
        self.unet, self.where, self.sdxl = unet, where, sdxl

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        with captured_feature(self.unet, self.where) as found:
            out = run_unet(self.unet, _unet_inputs(sample, timestep, encoder_hidden_states, text_embeds, time_ids))
        return out, found["feature"]


class ShallowUNet(torch.nn.Module):
    """The shallow path: the UNet's noise prediction from its inputs and the cached feature."""

    def __init__(self, unet, where: Boundary, sdxl: bool):
        super().__init__()
        self.unet, self.where, self.sdxl = unet, where, sdxl

    def forward(self, sample, timestep, encoder_hidden_states, *rest):
        *added, cache_feature = rest
        text_embeds, time_ids = added if self.sdxl else (None, None)
        with _patched(shallow_forwards(self.unet, self.where, cache_feature)):
            return run_unet(self.unet, _unet_inputs(sample, timestep, encoder_hidden_states, text_embeds, time_ids))


class Split(NamedTuple):
    full: torch.nn.Module  # returns (noise prediction, cache feature)
    shallow: torch.nn.Module  # takes the full graph's inputs and then the cache feature
    boundary: str  # the layer whose hidden-state input is the feature
    scope: str  # the node-name prefix of the UNet's layers inside both modules' traced graphs


def split(unet, branch: int, sdxl: bool) -> Split:
    where = boundary(unet, branch)
    return Split(FullUNet(unet, where, sdxl), ShallowUNet(unet, where, sdxl), where.name, "/unet/")
