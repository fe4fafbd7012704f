"""Feature caching (DeepCache) as two graphs: the full graph, the denoiser that also outputs the deep feature
at the cache branch, and the shallow graph, which takes that feature instead of computing the deep part again.
Where the denoiser splits (the branch numbering, the layers each graph holds) is its backbone adapter's
(`source.backbone.feature_cache_split`); with the feature of the same step the shallow graph reproduces the
denoiser.

The pass adds both graphs to the artifact (the full one in place of the plain denoiser graph) and sets the
runtime's `feature_cache` strategy with the schedule (`sdopt.runtime.caching`). Run after `quantize`: both
graphs then carry the quantized layers they hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdopt.compress.registry import register
from sdopt.contract import feature_cache as caching
from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import DENOISER, NOISE_OUTPUT, GraphSpec


@dataclass(frozen=True)
class CacheConfig:
    schedule: str = "uniform"  # uniform | nonuniform | adaptive (sdopt.runtime.caching)
    interval: int = 3  # uniform: the full graph every N steps; nonuniform: steps / N full steps; adaptive: at most N
    branch: int = 0  # DeepCache's cache_branch_id
    threshold: float = 0.05  # adaptive: accumulated relative change of the output that forces a full step
    pow: float = 1.4  # nonuniform: exponent of the spacing
    center: int = 15  # nonuniform: the step the full steps crowd around

    def __post_init__(self):
        caching.check_params(self.schedule_params(), "cache")
        if isinstance(self.branch, bool) or not isinstance(self.branch, int) or self.branch < 0:
            raise SdoptError(f"cache: branch {self.branch!r} must be a non-negative integer")

    def schedule_params(self) -> dict:
        return {"schedule": self.schedule, "interval": self.interval, "threshold": self.threshold,
                "pow": self.pow, "center": self.center}


def check(source, config: CacheConfig) -> None:
    backbone = source.backbone
    if getattr(backbone, "feature_cache_split", None) is None:
        raise SdoptError(f"cache: the {backbone.family} backbone does not say where to split it for feature caching")
    backbone.check_feature_cache(source.denoiser, config.branch)


def apply(source, config: CacheConfig):
    backbone, model = source.backbone, source.denoiser
    split = backbone.feature_cache_split(model, config.branch)
    inputs = source.example_inputs()
    with torch.no_grad():
        feature = split.full(*inputs.values())[1]
    latent = backbone.latent_input
    scale = inputs[latent].shape[2] // feature.shape[2]
    image_axes = {0: "batch", 2: "height", 3: "width"}
    feature_axes = {0: "batch", 2: "height" if scale == 1 else f"height/{scale}",
                    3: "width" if scale == 1 else f"width/{scale}"}
    axes = {name: {0: "batch"} for name in inputs}
    axes[latent] = axes[NOISE_OUTPUT[0]] = image_axes
    full_name = backbone.component  # the artifact's graph folders: the plain denoiser's, and the shallow one
    shallow_name = f"{full_name}_shallow"
    source.outputs.graphs = [g for g in source.outputs.graphs if g.name not in (full_name, shallow_name)] + [
        GraphSpec(full_name, DENOISER, backbone.component, split.full, inputs, [NOISE_OUTPUT[0], caching.FEATURE],
                  {**axes, caching.FEATURE: feature_axes}, scope=split.scope),
        GraphSpec(shallow_name, caching.SHALLOW_ROLE, backbone.component, split.shallow,
                  {**inputs, caching.FEATURE: feature}, [NOISE_OUTPUT[0]], {**axes, caching.FEATURE: feature_axes},
                  scope=split.scope, partial=True)]
    source.outputs.denoise = {"strategy": "feature_cache", "params": config.schedule_params()}
    shallow_parameters = called_parameters(model, lambda: split.shallow(*inputs.values(), feature))
    source.outputs.records.append({"pass": "cache", "branch": config.branch, "boundary": split.boundary,
                                   "feature_channels": int(feature.shape[1]), "feature_scale": scale,
                                   "shallow_parameters": shallow_parameters,
                                   f"{backbone.component}_parameters": sum(p.numel() for p in model.parameters())})
    return source


def called_parameters(root, run) -> int:
    """Parameters of the modules of `root` that `run()` calls: what a traced graph of that call holds."""
    used = set()
    handles = [m.register_forward_pre_hook(lambda module, _args: used.add(module)) for m in root.modules()]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return sum(p.numel() for m in used for p in m.parameters(recurse=False))


register("cache", CacheConfig, apply, check=check, after=("quantize",))
