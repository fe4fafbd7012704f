"""sdopt's own reference model families: a caption grammar, a renderer, a detector that reads the caption
back, a trainer and the shipped model. Evaluation, calibration and the model sources ask this module, never
a family package by name.

Each family package (``sdopt.reference.tinyshapes``, ``sdopt.reference.tinyscenes``) has ``grammar`` (``sample_pairs``,
``heldout_pairs``, ``calibration_prompts``, ``vocabulary_words``), ``render`` (``render``, ``background_of``,
``IMAGE_SIZE``) and ``evaluate`` (``alignment``, ``DEFAULT_STEPS``, ``DEFAULT_GUIDANCE``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MODELS_DIR = Path(__file__).parent / "models"
CALIBRATION_HEAD = 64  # prompts of the grammar's own calibration set, first in every larger pool


@dataclass(frozen=True)
class Family:
    name: str  # also the --model source that names the shipped model
    package: str
    marker: str  # file a trained folder of this family carries: {"family", "steps", "guidance"}

    @property
    def slug(self) -> str:
        """The name as a Python identifier: the shipped model's folder, result file suffixes."""
        return self.name.replace("-", "_")

    def result_file(self, stem: str) -> str:
        """A benchmark's result file: STEM.json for tiny-shapes (whose files came first), else STEM_SLUG.json."""
        return f"{stem}.json" if self.name == "tiny-shapes" else f"{stem}_{self.slug}.json"

    @property
    def model_dir(self) -> Path:
        return MODELS_DIR / self.slug

    @property
    def shipped(self) -> bool:
        return (self.model_dir / "model_index.json").is_file()

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{name}")

    def heldout_pairs(self, n: int) -> list[tuple[str, int]]:
        return self.module("grammar").heldout_pairs(n)

    def calibration_prompts(self, n: int = 64) -> list[str]:
        """`n` training prompts. The first 64 are the grammar's calibration set (what quantization calibrates
        on); more prompts extend it with further distinct training prompts, so a larger pool keeps its head."""
        grammar = self.module("grammar")
        head = grammar.calibration_prompts(min(n, CALIBRATION_HEAD))
        if n <= CALIBRATION_HEAD:
            return head
        seen = set(head)
        more = [p for p in dict.fromkeys(grammar.calibration_prompts(n)) if p not in seen]
        return (head + more)[:n]

    def describes(self, caption: str) -> bool:
        """Whether `caption` is one of the grammar's (the detector can read alignment only for those)."""
        try:
            self.module("grammar").parse(caption)
        except ValueError:
            return False
        return True

    def alignment(self, captions, images) -> dict:
        """{"alignment", "per_attribute": {name: rate}, "n", ...}: the detector's reading against the captions."""
        return self.module("evaluate").alignment(captions, images)


FAMILIES = {f.name: f for f in (Family("tiny-shapes", "sdopt.reference.tinyshapes", "tiny_shapes.json"),
                                Family("tiny-scenes", "sdopt.reference.tinyscenes", "tiny_scenes.json"),
                                # tiny-scenes' grammar, detector and held-out pairs; SD3's layout, flow matching
                                Family("tiny-scenes-sd3", "sdopt.reference.tinyscenes", "tiny_scenes_sd3.json"))}


def headline(scores: dict) -> dict:
    """A benchmark row's part of `Family.alignment`'s scores: alignment, and binding errors where the family
    has two objects."""
    return {k: scores[k] for k in ("alignment", "binding_error") if k in scores}


def family(name: str | None) -> Family | None:
    """The reference family called `name`, or None (any other model)."""
    return FAMILIES.get(name or "")


def source_folder(spec: str) -> Path | None:
    """The folder a model source reads: a shipped reference model's for its name, the path of a folder source."""
    known = FAMILIES.get(spec)
    if known is not None:
        return known.model_dir if known.shipped else None
    return Path(spec) if Path(spec).is_dir() else None


def family_of_folder(folder: Path) -> Family | None:
    """The family whose marker file the folder carries."""
    return next((f for f in FAMILIES.values() if (Path(folder) / f.marker).is_file()), None)


__all__ = ["Family", "FAMILIES", "family", "family_of_folder", "headline", "source_folder"]
