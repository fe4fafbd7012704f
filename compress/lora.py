"""LoRA fusing: a LoRA file's low-rank updates added into the denoiser's and text encoders' weights, before the
other passes, so that quantization, export and the runtime see one ordinary model.

diffusers' loader reads the file (diffusers / PEFT and kohya formats; safetensors only, never pickle),
peft applies it, and `fuse_lora` folds it into the weights at the given scale; the adapter is then
unloaded, so the fused model has no LoRA modules left. `sdopt compress --lora FILE[:SCALE]` (repeatable)
puts one `lora` pass per file at the front of the recipe.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sdopt.backbones.registry import PASS_FAMILIES
from sdopt.compress.registry import Shortcut, register
from sdopt.contract.cache import first_non_finite
from sdopt.contract.errors import SdoptError
from sdopt.contract.safe_io import open_regular, read_bytes

MAX_SCALE = 100.0  # |scale|: beyond it a LoRA overwhelms any weight it is added to
MAX_FILE_BYTES = 4 << 30


@dataclass(frozen=True)
class LoraConfig:
    file: str  # a .safetensors LoRA (diffusers / PEFT or kohya keys)
    scale: float = 1.0  # strength of the fused update

    def __post_init__(self):
        if not self.file:
            raise SdoptError("lora: file must name a .safetensors file")
        if not math.isfinite(self.scale) or abs(self.scale) > MAX_SCALE:
            raise SdoptError(f"lora: scale {self.scale} must be a number in [-{MAX_SCALE:g}, {MAX_SCALE:g}]")


def check(source, config: LoraConfig) -> None:
    with open_regular(Path(config.file), "lora"):  # a folder, a FIFO or a missing file: said as such
        pass
    if Path(config.file).suffix != ".safetensors":
        raise SdoptError(f"lora {config.file}: sdopt reads LoRA weights from .safetensors files only")
    read_lora(config.file)


def read_lora(file: str) -> tuple[dict, str]:
    """(tensors, sha256) of a LoRA file: a regular safetensors file whose every tensor is finite."""
    import hashlib

    from safetensors.torch import load

    data = read_bytes(Path(file), "lora", MAX_FILE_BYTES)
    try:
        state = load(data)
    except Exception as err:  # safetensors raises its own error types for malformed headers
        raise SdoptError(f"lora {file}: not a safetensors file ({str(err).splitlines()[0] if str(err) else err})") \
            from None
    if not state:
        raise SdoptError(f"lora {file}: holds no tensors")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if bad is not None:
        raise SdoptError(f"lora {file}: tensor {bad} holds NaN or Inf")
    return state, hashlib.sha256(data).hexdigest()


def apply(source, config: LoraConfig):
    start = time.perf_counter()
    pipe = source.pipeline
    state, digest = read_lora(config.file)  # read again: what is fused is what was checked
    fused = fuse_lora(pipe, state, config.scale, f"sdopt_lora_{len(source.outputs.records)}", label=config.file)
    source.outputs.records.append({"pass": "lora", "file": Path(config.file).name, "sha256": digest,
                           "scale": config.scale, "fused_layers": fused,
                           "seconds": round(time.perf_counter() - start, 2)})
    return source


def fuse_lora(pipe, weights, scale: float, adapter: str, label: str) -> dict:
    """Fuses a LoRA (a state dict) into the pipeline's denoiser and text encoders; the LoRA layers fused per
    component. A LoRA that does not fit the model, or whose fused weights are not finite, is one error."""
    import torch

    from sdopt.backbones import backbone_of_pipeline

    denoiser = backbone_of_pipeline(pipe).component
    loadable = getattr(pipe, "_lora_loadable_modules", None) or [denoiser, "text_encoder", "text_encoder_2"]
    components = [name for name in loadable if getattr(pipe, name, None) is not None]  # FLUX: never its T5
    try:
        with _quiet_loaders():
            pipe.load_lora_weights(weights, adapter_name=adapter)
    except (ValueError, KeyError, OSError, RuntimeError) as err:  # diffusers' loader for a file it cannot map
        raise SdoptError(f"lora {label}: {_load_error(err)}") from None
    fused = {name: _lora_layers(getattr(pipe, name)) for name in components}
    if not any(fused.values()):
        pipe.unload_lora_weights()
        raise SdoptError(f"lora {label}: matched no layer of {', '.join(components)} (does it belong to "
                         f"this model?)")
    with torch.no_grad():
        pipe.fuse_lora(components=components, lora_scale=scale, adapter_names=[adapter])
    pipe.unload_lora_weights()
    for name in components:
        bad = first_non_finite(getattr(pipe, name))
        if bad is not None:
            raise SdoptError(f"lora {label}: fused at scale {scale:g}, it makes {name}.{bad} non-finite (NaN or Inf)")
    return fused


@contextlib.contextmanager
def _quiet_loaders():
    """diffusers and peft log every key they could not map (hundreds of lines for a LoRA of another model): the
    error that follows says it in one line."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("diffusers", "peft")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from "
                       r"checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)")


def _load_error(err: BaseException) -> str:
    """diffusers' loading error in one line: for tensors of the wrong size, how many and the first."""
    text = str(err)
    found = _MISMATCH.findall(text)
    if found:
        layer, theirs, ours = found[0]
        layer = re.sub(r"\.lora_[AB]\.[^.]+\.weight$", "", layer)
        return (f"made for another model: {len(found)} of its tensors do not fit this model's layers (first: "
                f"{layer}, {theirs} in the file, {ours} in the model)")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.rstrip().endswith(":")]
    return f"diffusers cannot load it ({(lines or [type(err).__name__])[0][:300]})"


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


LORA_FLAG = Shortcut("--lora", None, {"action": "append", "metavar": "FILE[:SCALE]",
                                      "help": "fuse this LoRA (.safetensors, diffusers or kohya format) into the "
                                              "denoiser and text encoders before the recipe's passes, at SCALE "
                                              "(default 1); repeatable"}, _file_and_scale)
register("lora", LoraConfig, apply, check=check, before=("*",), repeatable=True,
         families=(*PASS_FAMILIES, "mmdit", "flux"), shortcuts=(LORA_FLAG,))
