"""Split quantizers for the concatenated skip input of up-block convolutions (Q-Diffusion).

An up-block ResNet sees torch.cat([h, skip]): two tensors with very different ranges share one
activation scale, so the smaller one loses most of its int8 levels. A split convolution computes
the same result as two convolutions over the two channel slices (weights sliced to match), summed.
Each part is an ordinary nn.Conv2d, so modelopt gives it its own input quantizer, and the exporter
writes it as Slice -> Q/DQ -> Conv, two paths joined by an Add.
"""

from __future__ import annotations

import torch
from torch import nn


class SplitInputConv(nn.Module):
    """conv(cat([a, b])) as conv_a(a) + conv_b(b); conv_a carries the bias."""

    def __init__(self, conv: nn.Conv2d, first_channels: int):
        super().__init__()
        if not 0 < first_channels < conv.in_channels or conv.groups != 1:
            raise ValueError(f"cannot split a conv with {conv.in_channels} inputs at channel {first_channels}")
        self.first_channels = first_channels
        self.parts = nn.ModuleList()
        for lo, hi, bias in ((0, first_channels, True), (first_channels, conv.in_channels, False)):
            part = nn.Conv2d(hi - lo, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                             conv.dilation, bias=bias and conv.bias is not None, padding_mode=conv.padding_mode)
            part.weight.data.copy_(conv.weight.data[:, lo:hi])
            if part.bias is not None:
                part.bias.data.copy_(conv.bias.data)
            self.parts.append(part.to(conv.weight.device, conv.weight.dtype))

    def forward(self, x):
        first, second = x[:, :self.first_channels], x[:, self.first_channels:]
        return self.parts[0](first) + self.parts[1](second)


def skip_channels(unet, run_once) -> dict[str, int]:
    """'up_blocks.i.resnets.j' -> channels of the skip tensor concatenated into its input, observed
    on one forward pass (`run_once(unet)`): resnet j of an up block takes res_hidden_states_tuple[-1-j]."""
    found: dict[str, int] = {}

    def hook(name, block):
        def capture(_module, args, kwargs):
            skips = kwargs.get("res_hidden_states_tuple")
            if skips is None:
                return
            for j in range(len(block.resnets)):
                found[f"{name}.resnets.{j}"] = int(skips[-1 - j].shape[1])
        return capture

    handles = [block.register_forward_pre_hook(hook(f"up_blocks.{i}", block), with_kwargs=True)
               for i, block in enumerate(unet.up_blocks) if hasattr(block, "resnets")]
    try:
        with torch.no_grad():
            run_once(unet)
    finally:
        for handle in handles:
            handle.remove()
    return found


def split_skip_convs(unet, run_once, which=("conv1", "conv_shortcut")) -> list[str]:
    """Replace the convolutions of up-block ResNets that read the concatenated input with split
    convolutions. Returns the names of the replaced modules."""
    replaced = []
    modules = dict(unet.named_modules())
    for resnet_name, skip in skip_channels(unet, run_once).items():
        resnet = modules[resnet_name]
        for attr in which:
            conv = getattr(resnet, attr, None)
            if isinstance(conv, nn.Conv2d) and conv.in_channels > skip:
                setattr(resnet, attr, SplitInputConv(conv, conv.in_channels - skip))
                replaced.append(f"{resnet_name}.{attr}")
    return replaced
