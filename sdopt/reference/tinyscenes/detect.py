"""Deterministic numpy detector for tiny-scenes images (no learned weights).

``detect(image)`` reads the scene back from an (H, W, 3) uint8 image (any square size): the background
(plain or two-tone), the objects (size, colour, shape each) and, for two objects, their relation, in the
grammar's order (first object left of / above the second).

Method:

1. background: median of the border pixels of the upper and of the lower half; two-tone when they differ
   by more than half the two tones' distance; each pixel's background is its half's median;
2. objects: 4-connected components of pixels farther than ``FOREGROUND`` from their background, ranked by
   summed distance; a component counts when its sum is at least ``MIN_SHARE`` of the largest one's and
   covers ``MIN_AREA`` (32-unit canvas); at most two are read;
3. each object: colour = mean of its strongest pixels -> nearest palette colour; soft coverage = projection
   of (pixel - background) on (colour - background) within 2 px of the component, the other component's
   pixels excluded; size, shape and centre from the coverage as in tiny-shapes' detector
   (:func:`sdopt.reference.tinyshapes.detect.alpha_features`), size by radius >= ``LARGE_RADIUS``;
4. relation: horizontal when the centres differ more in x than in y, else vertical.
"""

from __future__ import annotations

import numpy as np

from sdopt.reference.tinyscenes.grammar import Scene
from sdopt.reference.tinyscenes.render import TONES
from sdopt.reference.tinyshapes.detect import (
    alpha_features,
    connected_components,
    dilate,
    nearest_color,
    radius_of,
    shape_of,
)

FOREGROUND = 48.0  # colour distance from the background (the dimmest palette colour on the light tone: ~120)
MIN_SHARE = 0.04
MIN_AREA = 6.0
LARGE_RADIUS = 5.0  # between small (4.0 +- 0.3) and large (6.0 +- 0.4)
_TONE_DISTANCE = float(np.linalg.norm(np.subtract(TONES["bottom"], TONES["top"])))


def _background(img: np.ndarray) -> tuple[str, np.ndarray]:
    h = img.shape[0]
    half = h // 2

    def border(rows: slice) -> np.ndarray:
        part = img[rows]
        return np.concatenate([part[:, 0], part[:, -1]] + ([part[0]] if rows.start == 0 else [part[-1]]), axis=0)

    top, bottom = np.median(border(slice(0, half)), axis=0), np.median(border(slice(half, h)), axis=0)
    if np.linalg.norm(bottom - top) <= _TONE_DISTANCE / 2:
        plain = np.median(np.concatenate([border(slice(0, half)), border(slice(half, h))]), axis=0)
        return "plain", np.broadcast_to(plain, img.shape)
    bg = np.empty_like(img)
    bg[:half], bg[half:] = top, bottom
    return "two-tone", bg


def objects(image: np.ndarray) -> tuple[str, list[dict]]:
    """(background, objects) with each object's features (rgb, area, fill, ..., cx, cy), largest first."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    img = img[..., :3].astype(np.float64)
    kind, bg = _background(img)
    diff = img - bg
    dist = np.linalg.norm(diff, axis=-1)
    labels, n = connected_components(dist > FOREGROUND)
    sums = np.bincount(labels.ravel(), weights=dist.ravel(), minlength=n + 1)[1:]
    unit2 = (32.0 / img.shape[0]) ** 2
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:] * unit2
    ranked = [i + 1 for i in np.argsort(-sums, kind="stable")
              if sums[i] >= MIN_SHARE * sums.max() and areas[i] >= MIN_AREA][:2]
    found = []
    for label in ranked:
        comp = labels == label
        others = (labels > 0) & ~comp
        cd = np.where(comp, dist, 0.0)
        color = img[cd >= 0.8 * cd.max()].mean(axis=0)
        v = color - bg  # per pixel on a two-tone background
        alpha = np.clip((diff * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-6), 0.0, 1.0)
        alpha = alpha * (dilate(comp, 2) & ~others)
        found.append({"rgb": tuple(float(c) for c in color), **alpha_features(alpha)})
    return kind, found


def describe(f: dict) -> tuple[str, str, str]:
    """(size, colour, shape) of one object's features."""
    shape = shape_of(f)
    return ("large" if radius_of(f, shape) >= LARGE_RADIUS else "small", nearest_color(f["rgb"]), shape)


def detect(image: np.ndarray) -> Scene | None:
    """The scene in ``image`` (first object left or on top), or None when no object is found."""
    kind, found = objects(image)
    if not found:
        return None
    if len(found) == 1:
        return Scene((describe(found[0]),), None, kind)
    a, b = found
    horizontal = abs(a["cx"] - b["cx"]) >= abs(a["cy"] - b["cy"])
    key = "cx" if horizontal else "cy"
    first, second = (a, b) if a[key] <= b[key] else (b, a)
    return Scene((describe(first), describe(second)), "horizontal" if horizontal else "vertical", kind)


__all__ = ["detect", "objects", "describe", "FOREGROUND", "LARGE_RADIUS"]
