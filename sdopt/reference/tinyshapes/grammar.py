"""Caption grammar of the tiny-shapes data set.

One object per image, described by four attributes::

    size      small | large                                       (2)
    color     red | orange | yellow | green | cyan | blue |
              purple | white                                      (8)
    shape     circle | square | triangle | diamond                (4)
    position  top left | top right | bottom left | bottom right |
              center                                              (5)

320 attribute tuples, each written with one of two templates::

    "a {size} {color} {shape} in the {position}"
    "a {size} {color} {shape} at the {position}"

(``center`` reads "in the center" / "at the center").

Held-out protocol: a fixed 10 % of the attribute tuples (32 of 320, chosen by
a seeded shuffle, stratified so that every colour, shape, size and position
value still occurs in training) never occurs in training, and the held-out
seeds (>= ``HELDOUT_SEED_BASE``) are disjoint from the training seeds (<
``TRAIN_SEED_LIMIT``).  So held-out pairs test compositional generalisation to
unseen combinations of seen attribute values.  Calibration prompts come from
the training tuples only.

Everything is deterministic in the seed (``numpy.random.default_rng``).
"""

from __future__ import annotations

import itertools
import re

import numpy as np

ATTRIBUTES = ("size", "color", "shape", "position")

SIZES = ("small", "large")
COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SHAPES = ("circle", "square", "triangle", "diamond")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")

VALUES = {"size": SIZES, "color": COLORS, "shape": SHAPES, "position": POSITIONS}

TEMPLATES = ("a {size} {color} {shape} in the {position}", "a {size} {color} {shape} at the {position}")

#: training seeds are drawn from [0, TRAIN_SEED_LIMIT)
TRAIN_SEED_LIMIT = 1_000_000_000
#: held-out seeds are HELDOUT_SEED_BASE + i
HELDOUT_SEED_BASE = 2_000_000_000

_GRAMMAR_SEED = 20240611
_HELDOUT_FRACTION = 0.1

ALL_TUPLES: tuple[tuple[str, str, str, str], ...] = tuple(itertools.product(SIZES, COLORS, SHAPES, POSITIONS))


def vocabulary_words() -> list[str]:
    """Every word the grammar can produce (for the tokenizer)."""
    words: list[str] = []
    for template in TEMPLATES:
        words += re.findall(r"[a-z]+", template.replace("{", " ").replace("}", " "))
    for values in VALUES.values():
        for v in values:
            words += v.split()
    out: list[str] = []
    for w in words:
        if w not in out and w not in ATTRIBUTES:
            out.append(w)
    return out


def _split_tuples() -> tuple[tuple, tuple]:
    rng = np.random.default_rng(_GRAMMAR_SEED)
    n_held = int(round(len(ALL_TUPLES) * _HELDOUT_FRACTION))
    # re-draw until every value of every attribute occurs in the held-out set's
    # complement with all its pairwise partners (cheap: 320 tuples)
    for _ in range(1000):
        order = rng.permutation(len(ALL_TUPLES))
        held = [ALL_TUPLES[i] for i in order[:n_held]]
        train = [ALL_TUPLES[i] for i in order[n_held:]]
        ok = True
        for a, b in itertools.combinations(range(4), 2):
            seen = {(t[a], t[b]) for t in train}
            if any((t[a], t[b]) not in seen for t in held):
                ok = False
                break
        if ok:
            return tuple(sorted(train, key=ALL_TUPLES.index)), tuple(sorted(held, key=ALL_TUPLES.index))
    raise RuntimeError("could not split the attribute tuples")  # pragma: no cover


TRAIN_TUPLES, HELDOUT_TUPLES = _split_tuples()


def caption_from(attrs: dict | tuple, template: int = 0) -> str:
    """Caption for an attribute dict (or (size, color, shape, position) tuple)."""
    if not isinstance(attrs, dict):
        attrs = dict(zip(ATTRIBUTES, attrs))
    return TEMPLATES[template].format(**attrs)


def _captions_of(tuples) -> list[str]:
    return [caption_from(t, k) for t in tuples for k in range(len(TEMPLATES))]


TRAIN_CAPTIONS: tuple[str, ...] = tuple(_captions_of(TRAIN_TUPLES))
HELDOUT_CAPTIONS: tuple[str, ...] = tuple(_captions_of(HELDOUT_TUPLES))

_PARSE_RE = re.compile(
    r"^\s*an?\s+(?P<size>%s)\s+(?P<color>%s)\s+(?P<shape>%s)\s+(?:in|at)\s+the\s+(?P<position>%s)\s*\.?\s*$"
    % tuple("|".join(VALUES[a]) for a in ATTRIBUTES)
)


def parse(caption: str) -> dict[str, str]:
    """Attribute dict of a grammar caption; ``ValueError`` if it is not one."""
    m = _PARSE_RE.match(" ".join(caption.lower().split()))
    if m is None:
        raise ValueError(f"not a tiny-shapes caption: {caption!r}")
    return {a: m.group(a) for a in ATTRIBUTES}


def attribute_tuple(caption: str) -> tuple[str, str, str, str]:
    d = parse(caption)
    return tuple(d[a] for a in ATTRIBUTES)  # type: ignore[return-value]


def is_heldout(caption: str) -> bool:
    return attribute_tuple(caption) in set(HELDOUT_TUPLES)


def sample_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` training captions (held-out combinations excluded), deterministic in ``seed``."""
    rng = np.random.default_rng([_GRAMMAR_SEED, 1, seed])
    idx = rng.integers(0, len(TRAIN_CAPTIONS), size=n)
    return [TRAIN_CAPTIONS[i] for i in idx]


def sample_pairs(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` training (caption, render seed) pairs; seeds in [0, TRAIN_SEED_LIMIT)."""
    rng = np.random.default_rng([_GRAMMAR_SEED, 2, seed])
    idx = rng.integers(0, len(TRAIN_CAPTIONS), size=n)
    seeds = rng.integers(0, TRAIN_SEED_LIMIT, size=n)
    return [(TRAIN_CAPTIONS[i], int(s)) for i, s in zip(idx, seeds)]


def heldout_pairs(n: int = 256) -> list[tuple[str, int]]:
    """Fixed evaluation set: (caption, seed) pairs over the held-out combinations.

    Cycles through all held-out captions (32 tuples x 2 templates) in a fixed
    shuffled order; pair ``i`` has seed ``HELDOUT_SEED_BASE + i``.  The first
    ``n`` pairs of a larger call equal a smaller call.
    """
    rng = np.random.default_rng([_GRAMMAR_SEED, 3])
    order = list(rng.permutation(len(HELDOUT_CAPTIONS)))
    out = []
    for i in range(n):
        if i and i % len(order) == 0:
            order = list(rng.permutation(len(HELDOUT_CAPTIONS)))
        out.append((HELDOUT_CAPTIONS[order[i % len(order)]], HELDOUT_SEED_BASE + i))
    return out


def calibration_prompts(n: int = 64) -> list[str]:
    """Prompts for quantization calibration: training distribution, no held-out combination.

    The first ``len(TRAIN_CAPTIONS)`` prompts are distinct (a fixed shuffle of all
    training captions), then the shuffle repeats.
    """
    rng = np.random.default_rng([_GRAMMAR_SEED, 4])
    out: list[str] = []
    while len(out) < n:
        out += [TRAIN_CAPTIONS[i] for i in rng.permutation(len(TRAIN_CAPTIONS))]
    return out[:n]


__all__ = [
    "ATTRIBUTES",
    "SIZES",
    "COLORS",
    "SHAPES",
    "POSITIONS",
    "VALUES",
    "TEMPLATES",
    "TRAIN_TUPLES",
    "HELDOUT_TUPLES",
    "TRAIN_CAPTIONS",
    "HELDOUT_CAPTIONS",
    "vocabulary_words",
    "caption_from",
    "parse",
    "attribute_tuple",
    "is_heldout",
    "sample_captions",
    "sample_pairs",
    "heldout_pairs",
    "calibration_prompts",
]
