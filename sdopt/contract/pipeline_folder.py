"""What diffusers' `from_pretrained` needs beside a pipeline folder, shared by the source loader and the reference
models' evaluator (which lies below the sources)."""

from __future__ import annotations

# SD 1.x / 2.x pipelines that ask for a safety checker unless told there is none
_SAFETY_CHECKED = frozenset({"StableDiffusionPipeline", "StableDiffusionInpaintPipeline",
                             "StableDiffusionImg2ImgPipeline"})


def pretrained_options(index: dict) -> dict:
    """None for every component the folder leaves out ([null, null]: SD3 without T5), as diffusers asks, and no
    safety checker for SD 1.x / 2.x."""
    extra = ({"safety_checker": None, "requires_safety_checker": False}
             if index.get("_class_name") in _SAFETY_CHECKED else {})
    extra.update({key: None for key, value in index.items() if not key.startswith("_") and value == [None, None]})
    return extra
