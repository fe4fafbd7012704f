"""LoRA fusing: a LoRA file's low-rank updates added into the UNet's and text encoders' weights, before the
other passes, so that quantization, export and the runtime see one ordinary model.

diffusers' loader reads the file (diffusers / PEFT and kohya formats; safetensors only, never pickle),
peft applies it, and `fuse_lora` folds it into the weights at the given scale; the adapter is then
unloaded, so the fused model has no LoRA modules left. `sdopt compress --lora FILE[:SCALE]` (repeatable)
puts one `lora` pass per file at the front of the recipe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from sdopt.artifact import sha256_file
from sdopt.errors import SdoptError
from sdopt.passes import Shortcut, register


@dataclass(frozen=True)
class LoraConfig:
    file: str  # a .safetensors LoRA (diffusers / PEFT or kohya keys)
    scale: float = 1.0  # strength of the fused update

    def __post_init__(self):
        if not self.file:
            raise SdoptError("lora: file must name a .safetensors file")
        if not math.isfinite(self.scale):
            raise SdoptError(f"lora: scale {self.scale} is not a finite number")


def check(source, config: LoraConfig) -> None:
    path = Path(config.file)
    if not path.is_file():
        raise SdoptError(f"lora {config.file}: no such file")
    if path.suffix != ".safetensors":
        raise SdoptError(f"lora {config.file}: sdopt reads LoRA weights from .safetensors files only")


def apply(source, config: LoraConfig):
    start = time.perf_counter()
    pipe = source.pipeline
    fused = fuse_lora(pipe, config.file, config.scale, f"sdopt_lora_{len(source.records)}", label=config.file)
    source.records.append({"pass": "lora", "file": Path(config.file).name, "sha256": sha256_file(Path(config.file)),
                           "scale": config.scale, "fused_layers": fused,
                           "seconds": round(time.perf_counter() - start, 2)})
    return source


def fuse_lora(pipe, weights, scale: float, adapter: str, label: str) -> dict:
    """Fuses a LoRA (a file or a state dict) into the pipeline's UNet and text encoders; the LoRA layers fused
    per component."""
    import torch

    components = ["unet", *(f"text_encoder{s}" for s in ("", "_2") if getattr(pipe, f"text_encoder{s}", None))]
    try:
        pipe.load_lora_weights(weights, adapter_name=adapter)
    except (ValueError, KeyError, OSError, RuntimeError) as err:  # diffusers' loader for a file it cannot map
        raise SdoptError(f"lora {label}: diffusers cannot load it ({str(err).splitlines()[0]})") from None
    fused = {name: _lora_layers(getattr(pipe, name)) for name in components}
    if not any(fused.values()):
        pipe.unload_lora_weights()
        raise SdoptError(f"lora {label}: matched no layer of {', '.join(components)} (does it belong to "
                         f"this model?)")
    with torch.no_grad():
        pipe.fuse_lora(components=components, lora_scale=scale, adapter_names=[adapter])
    pipe.unload_lora_weights()
    return fused


def _lora_layers(module) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for m in module.modules() if isinstance(m, BaseTunerLayer))


def _file_and_scale(text: str) -> dict:
    """FILE[:SCALE] -> the pass's options."""
    file, sep, scale = text.rpartition(":")
    if sep and file:
        try:
            return {"file": file, "scale": float(scale)}
        except ValueError:
            pass
    return {"file": text}


register("lora", LoraConfig, apply, check=check, before=("*",), shortcuts=(
    Shortcut("--lora", None, {"action": "append", "metavar": "FILE[:SCALE]",
                              "help": "fuse this LoRA (.safetensors, diffusers or kohya format) into the UNet and text "
                                      "encoders before the recipe's passes, at SCALE (default 1); repeatable"},
             _file_and_scale),))
