"""Caption grammar of the tiny-scenes data set: two objects and their relation.

An object is (size, colour, shape)::

    size      small | large                                               (2)
    colour    red | orange | yellow | green | cyan | blue | purple | white (8)
    shape     circle | square | triangle | diamond                        (4)

A scene is two objects of different colours and the relation of the first to the second, or one object
alone, on a plain or a two-tone background::

    "a large red circle left of a small blue square"
    "a small cyan diamond above a large white triangle on a two-tone background"
    "a large green square"

Relations: left of (axis "horizontal") | above (axis "vertical"); the object named first is the one on the
left or on top. (With "right of" and "below" as second wordings of the same scenes, a 7 M-parameter UNet
trained for 3,400 steps drew both objects right but put them in either order: 55 % relations right, no
better than chance. To follow "right of", a causal text encoder has to tell the first-named object's tokens
that the relation word after them flips their place; that is left out of this reference.)

Held-out protocol: a fixed 10 % of the two-object scenes (the two backgrounds chosen apart) and of the
one-object scenes never occurs in training, and held-out seeds (>=
``HELDOUT_SEED_BASE``) are disjoint from training seeds (< ``TRAIN_SEED_LIMIT``). Held-out pairs are
two-object scenes: they test attribute binding and relations on unseen combinations of seen values.
Everything is deterministic (``numpy.random.default_rng``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from sdopt.reference.tinyshapes.grammar import COLORS, HELDOUT_SEED_BASE, SHAPES, SIZES, TRAIN_SEED_LIMIT

OBJECT_ATTRIBUTES = ("size", "color", "shape")
RELATIONS = {"left of": "horizontal", "above": "vertical"}  # relation word -> axis
WORDING = {axis: word for word, axis in RELATIONS.items()}
AXES = tuple(RELATIONS.values())
BACKGROUNDS = ("plain", "two-tone")
BACKGROUND_PHRASE = {"plain": "", "two-tone": " on a two-tone background"}

_GRAMMAR_SEED = 20261206
#: validation seeds are VALIDATION_SEED_BASE + i: above every training seed, below every held-out seed
VALIDATION_SEED_BASE = (TRAIN_SEED_LIMIT + HELDOUT_SEED_BASE) // 2
_HELDOUT_FRACTION = 0.1
#: share of one-object scenes among training samples
ONE_OBJECT_SHARE = 0.15


@dataclass(frozen=True)
class Scene:
    """``objects[0]`` is left of (horizontal) or above (vertical) ``objects[1]``."""

    objects: tuple[tuple[str, str, str], ...]  # (size, color, shape) each
    axis: str | None  # None for one object
    background: str

    def caption(self) -> str:
        words = [f"a {' '.join(o)}" for o in self.objects]
        text = words[0] if self.axis is None else f"{words[0]} {WORDING[self.axis]} {words[1]}"
        return text + BACKGROUND_PHRASE[self.background]


OBJECTS = tuple(itertools.product(SIZES, COLORS, SHAPES))
TWO_OBJECT_SCENES = tuple(Scene((a, b), axis, bg) for a, b in itertools.product(OBJECTS, OBJECTS)
                          if a[1] != b[1] for axis in AXES for bg in BACKGROUNDS)
ONE_OBJECT_SCENES = tuple(Scene((a,), None, bg) for a in OBJECTS for bg in BACKGROUNDS)


def _split(scenes: tuple[Scene, ...], stream: int) -> tuple[tuple[Scene, ...], tuple[Scene, ...]]:
    rng = np.random.default_rng([_GRAMMAR_SEED, stream])
    held = np.zeros(len(scenes), dtype=bool)
    held[rng.permutation(len(scenes))[:int(round(len(scenes) * _HELDOUT_FRACTION))]] = True
    return (tuple(s for s, h in zip(scenes, held) if not h), tuple(s for s, h in zip(scenes, held) if h))


TRAIN_SCENES, HELDOUT_SCENES = _split(TWO_OBJECT_SCENES, 0)
TRAIN_SINGLES, HELDOUT_SINGLES = _split(ONE_OBJECT_SCENES, 1)
_HELDOUT = frozenset(HELDOUT_SCENES) | frozenset(HELDOUT_SINGLES)

_OBJECT_RE = r"an?\s+(%s)\s+(%s)\s+(%s)" % ("|".join(SIZES), "|".join(COLORS), "|".join(SHAPES))
_PARSE_RE = re.compile(r"^\s*%s(?:\s+(%s)\s+%s)?(\s+on\s+a\s+two-tone\s+background)?\s*\.?\s*$"
                       % (_OBJECT_RE, "|".join(RELATIONS), _OBJECT_RE))


def parse(caption: str) -> Scene:
    """The scene a grammar caption describes; ``ValueError`` if it is not one."""
    m = _PARSE_RE.match(" ".join(caption.lower().split()))
    if m is None:
        raise ValueError(f"not a tiny-scenes caption: {caption!r}")
    g = m.groups()
    background = "two-tone" if g[7] else "plain"
    first = (g[0], g[1], g[2])
    if g[3] is None:
        return Scene((first,), None, background)
    second = (g[4], g[5], g[6])
    if first[1] == second[1]:
        raise ValueError(f"not a tiny-scenes caption (both objects {first[1]}): {caption!r}")
    return Scene((first, second), RELATIONS[g[3]], background)


def is_heldout(caption: str) -> bool:
    return parse(caption) in _HELDOUT


def vocabulary_words() -> list[str]:
    """Every word the grammar can produce (for the tokenizer; CLIP's pre-tokenizer splits "two-tone")."""
    words = ["a", "an", "on", "two", "-", "tone", "background", "left", "of", "above"]
    words += list(SIZES) + list(COLORS) + list(SHAPES)
    return list(dict.fromkeys(words))


def sample_pairs(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` training (caption, render seed) pairs (held-out scenes excluded); render seeds < TRAIN_SEED_LIMIT."""
    rng = np.random.default_rng([_GRAMMAR_SEED, 2, seed])
    single = rng.random(n) < ONE_OBJECT_SHARE
    two = rng.integers(0, len(TRAIN_SCENES), size=n)
    one = rng.integers(0, len(TRAIN_SINGLES), size=n)
    seeds = rng.integers(0, TRAIN_SEED_LIMIT, size=n)
    return [((TRAIN_SINGLES[o] if s else TRAIN_SCENES[t]).caption(), int(r))
            for s, t, o, r in zip(single, two, one, seeds)]


def heldout_pairs(n: int = 256) -> list[tuple[str, int]]:
    """Fixed evaluation set: (caption, seed) pairs of held-out two-object scenes, pair ``i`` with seed
    ``HELDOUT_SEED_BASE + i``; the first ``n`` pairs of a larger call equal a smaller call."""
    order = np.random.default_rng([_GRAMMAR_SEED, 3]).permutation(len(HELDOUT_SCENES))
    return [(HELDOUT_SCENES[order[i % len(order)]].caption(), HELDOUT_SEED_BASE + i) for i in range(n)]


def validation_pairs(n: int = 256) -> list[tuple[str, int]]:
    """Training scenes (two objects) with seeds no training or held-out pair uses: for choosing sampling
    defaults without looking at the held-out set."""
    rng = np.random.default_rng([_GRAMMAR_SEED, 5])
    idx = rng.integers(0, len(TRAIN_SCENES), size=n)
    return [(TRAIN_SCENES[k].caption(), VALIDATION_SEED_BASE + i) for i, k in enumerate(idx)]


def calibration_prompts(n: int = 64) -> list[str]:
    """Quantization calibration prompts: training scenes only, drawn like training samples."""
    return [caption for caption, _ in sample_pairs(n, seed=4)]


__all__ = ["Scene", "OBJECTS", "RELATIONS", "AXES", "BACKGROUNDS", "TRAIN_SCENES", "HELDOUT_SCENES",
           "TRAIN_SINGLES", "HELDOUT_SINGLES", "parse", "is_heldout", "vocabulary_words", "sample_pairs",
           "heldout_pairs", "validation_pairs", "calibration_prompts", "HELDOUT_SEED_BASE", "TRAIN_SEED_LIMIT"]
