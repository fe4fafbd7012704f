"""Channel pruning of the denoiser's ResNet blocks with torch-pruning (Diff-Pruning's structured pruning).

What is removed is the inner width of every ResNet block: `conv1`'s output channels, with the channels of
`norm2`, `conv2`'s inputs and the time projection that torch-pruning's dependency graph ties to them. A block's
input and output widths stay, so skip concatenations, the attention blocks (their heads) and every other
GroupNorm are untouched. Channels go by whole `norm2` groups, ranked by the group's importance summed over
its channels, so every kept channel is normalised over exactly the channels it was before.

Importance is torch-pruning's: `magnitude` (L2 of the weights tied to a channel) or `taylor` (|weight x
gradient|, the gradient of the denoising loss on latents the teacher itself generated: data-free).
"""

from __future__ import annotations

import torch

from sdopt.backbones import backbone_of
from sdopt.contract.errors import SdoptError

IMPORTANCE = ("magnitude", "taylor")
MAX_RATIO = 0.75  # at most this share of a block's inner groups goes


def resnet_blocks(model) -> dict[str, torch.nn.Module]:
    """The model's ResNet blocks whose inner width can go (the time embedding added, not scale-shift), as its
    backbone adapter names them."""
    return backbone_of(model).resnet_blocks(model)


def block_calls(model, inputs: dict) -> tuple[dict, dict, int]:
    """From one denoiser call on `inputs`: each ResNet block's call arguments (hidden states, time embedding),
    the MACs of its two convolutions (whose cost scales with the inner width) and the MACs of the whole call."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = backbone_of(model)
    blocks, args, macs, handles = backbone.resnet_blocks(model), {}, {}, []

    def capture(name):
        def hook(module, call_args, call_kwargs):
            hidden = call_args[0]
            temb = call_args[1] if len(call_args) > 1 else call_kwargs.get("temb")
            args[name] = (hidden.detach(), None if temb is None else temb.detach())
        return hook

    def measure(name):
        def hook(module, _args, output):
            spatial = output.shape[0] * output.shape[-2] * output.shape[-1]
            k = module.conv1.kernel_size[0] * module.conv1.kernel_size[1]
            inner = module.conv1.out_channels
            macs[name] = spatial * k * inner * (module.conv1.in_channels + module.conv2.out_channels)
        return hook

    for name in blocks:
        handles.append(blocks[name].register_forward_pre_hook(capture(name), with_kwargs=True))
        handles.append(blocks[name].register_forward_hook(measure(name)))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            backbone.call(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return args, macs, counter.get_total_flops() // 2  # the counter counts 2 FLOPs per MAC


def denoising_gradients(model, teacher, records: list[dict], scheduler_config: dict, seed: int = 0) -> None:
    """Accumulate on `model`'s weights the gradient of the denoising loss on latents the teacher generated:
    each recorded call's x0 estimate (from the teacher's prediction) noised afresh at a random timestep."""
    from sdopt.compress.denoising import Objective

    backbone = backbone_of(model)
    latent, timestep = backbone.latent_input, backbone.timestep_input
    objective = Objective(scheduler_config)
    generator = torch.Generator().manual_seed(seed)
    model.requires_grad_(True).zero_grad(set_to_none=True)
    for record in records:
        inputs = {k: v for k, v in record.items() if isinstance(v, torch.Tensor)}
        with torch.no_grad():
            x0 = objective.x0(inputs[latent], inputs[timestep], backbone.call(teacher, inputs))
        sample, noised_at, target = objective.noised(x0, generator)
        loss = torch.nn.functional.mse_loss(backbone.call(model, {**inputs, latent: sample, timestep: noised_at}),
                                            target)
        (loss / len(records)).backward()


def prune_channels(model, block_args: dict, ratio: float, importance: str) -> dict[str, int]:
    """Remove `ratio` of every ResNet block's inner GroupNorm groups (at least one kept), the least important
    first; `block_args` are the blocks' call arguments from `block_calls`. Gradients must already be on the
    weights for `taylor`. Returns each block's new inner width."""
    import torch_pruning as tp

    if not 0 <= ratio <= MAX_RATIO:
        raise SdoptError(f"prune: channel ratio {ratio:.3f} outside [0, {MAX_RATIO}]")
    blocks = resnet_blocks(model)
    scorer = (tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude"
              else tp.importance.GroupTaylorImportance())
    widths = {}
    for name, block in blocks.items():
        if name not in block_args:
            continue  # a block this call does not reach
        groups, inner = block.norm2.num_groups, block.conv1.out_channels
        drop = min(groups - 1, round(groups * ratio))
        if drop:
            graph = tp.DependencyGraph().build_dependency(block, example_inputs=block_args[name])
            every = list(range(inner))
            with torch.no_grad():
                scores = scorer(graph.get_pruning_group(block.conv1, tp.prune_conv_out_channels, idxs=every))
            per_group = inner // groups
            ranked = scores.reshape(groups, per_group).sum(1).argsort()[:drop].tolist()
            idxs = sorted(g * per_group + c for g in ranked for c in range(per_group))
            graph.get_pruning_group(block.conv1, tp.prune_conv_out_channels, idxs=idxs).prune()
            block.norm2.num_groups = groups - drop
        widths[name] = block.conv1.out_channels
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return widths


def apply_widths(model, widths: dict[str, int]) -> None:
    """Give a freshly built denoiser the inner widths a channel-pruned one has, so that its state dict loads
    (the shapes are set here; the weights come from the state dict)."""
    blocks = resnet_blocks(model)
    unknown = sorted(set(widths) - set(blocks))
    if unknown:
        raise SdoptError(f"prune: channel widths name blocks this model lacks: {', '.join(unknown[:3])}")
    for name, width in widths.items():
        block = blocks[name]
        per_group = block.conv1.out_channels // block.norm2.num_groups
        if width % per_group or not 0 < width <= block.conv1.out_channels:
            raise SdoptError(f"prune: width {width} of {name} is not a whole number of its groups")
        c1, c2 = block.conv1, block.conv2
        block.conv1 = torch.nn.Conv2d(c1.in_channels, width, c1.kernel_size, c1.stride, c1.padding)
        block.conv2 = torch.nn.Conv2d(width, c2.out_channels, c2.kernel_size, c2.stride, c2.padding)
        block.norm2 = torch.nn.GroupNorm(width // per_group, width, eps=block.norm2.eps, affine=block.norm2.affine)
        if block.time_emb_proj is not None:
            block.time_emb_proj = torch.nn.Linear(block.time_emb_proj.in_features, width)
