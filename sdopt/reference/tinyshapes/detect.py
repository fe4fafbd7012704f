"""Deterministic numpy detector for tiny-shapes images (no learned weights).

``detect(image)`` recovers size, color, shape and position of the single
object in an (H, W, 3) uint8 image (any square size; geometry is normalised
to the 32-pixel canvas of :mod:`render`).

Method:

1. background = per-channel median of the border pixels;
2. foreground = the connected component (4-neighbourhood) of pixels whose
   colour distance to the background exceeds half the image's maximum
   distance, choosing the component with the largest summed distance;
3. object colour = mean of the component's strongest pixels (distance >= 80 %
   of its maximum) -> nearest palette colour;
4. a soft coverage ``alpha`` in [0, 1] = projection of (pixel - background) on
   (object colour - background), kept within 2 px of the component;
5. features from ``alpha``: area, extent (sum of row / column maxima),
   fill = area / (width * height), vertical offset of the centroid from the
   middle of the row support (triangles are bottom heavy);
6. shape: triangle if the offset >= 1/12 of the height, else by fill:
   >= 0.89 square, >= 0.70 circle, otherwise diamond;
   size: radius estimate sqrt(area / k_shape) >= 5.75 (32-px units) -> large;
   position: centre of the row / column supports -> nearest nominal centre.
"""

from __future__ import annotations

import numpy as np

from sdopt.reference.tinyshapes.grammar import ATTRIBUTES, parse
from sdopt.reference.tinyshapes.render import BACKGROUND, CENTERS, PALETTE, SQUARE_HALF

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[k] for k in _PALETTE_NAMES], dtype=np.float64)
_AREA_FACTOR = {"circle": np.pi, "square": 4 * SQUARE_HALF**2, "triangle": 2.0, "diamond": 2.0}

MIN_CONTRAST = 40.0  # below this max colour distance the image is "empty"
FILL_SQUARE = 0.89
FILL_CIRCLE = 0.70
TRIANGLE_OFFSET = 1.0 / 12.0
LARGE_RADIUS = 5.75


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected component labels (0 = background) of a boolean mask."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    n = 0
    ys, xs = np.nonzero(mask)
    for y0, x0 in zip(ys, xs):
        if labels[y0, x0]:
            continue
        n += 1
        labels[y0, x0] = n
        stack = [(y0, x0)]
        while stack:
            y, x = stack.pop()
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not labels[yy, xx]:
                    labels[yy, xx] = n
                    stack.append((yy, xx))
    return labels, n


def dilate(mask: np.ndarray, k: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(k):
        m = out.copy()
        m[1:] |= out[:-1]
        m[:-1] |= out[1:]
        m[:, 1:] |= out[:, :-1]
        m[:, :-1] |= out[:, 1:]
        out = m
    return out


def nearest_color(rgb) -> str:
    d = ((_PALETTE_RGB - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)
    return _PALETTE_NAMES[int(np.argmin(d))]


def features(image: np.ndarray) -> dict | None:
    """Measured features of the object, or None when no object is found."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    img = img[..., :3].astype(np.float64)
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]], axis=0)
    bg = np.median(border, axis=0)
    # a shape touching the border can bias the median: fall back to the nominal background
    if np.linalg.norm(bg - np.array(BACKGROUND)) > 60:
        bg = np.array(BACKGROUND, dtype=np.float64)
    diff = img - bg
    dist = np.linalg.norm(diff, axis=-1)
    dmax = float(dist.max())
    if dmax < MIN_CONTRAST:
        return None
    labels, n = connected_components(dist > max(0.5 * dmax, MIN_CONTRAST / 2))
    sums = np.bincount(labels.ravel(), weights=dist.ravel(), minlength=n + 1)
    sums[0] = -1
    comp = labels == int(np.argmax(sums))
    cd = np.where(comp, dist, 0.0)
    strong = cd >= 0.8 * cd.max()
    color = img[strong].mean(axis=0)
    v = color - bg
    vv = float(v @ v)
    if vv < 1e-6:
        return None
    alpha = np.clip((diff @ v) / vv, 0.0, 1.0) * dilate(comp, 2)
    return {"rgb": tuple(float(c) for c in color), **alpha_features(alpha)}


def alpha_features(alpha: np.ndarray) -> dict:
    """Geometry of one object from its (H, W) coverage in [0, 1], in 32-unit canvas coordinates: area,
    extent (sum of row / column maxima), fill of the bounding box, centroid offset below the middle of the
    row support (triangles are bottom heavy), centre of the row / column supports."""
    h, w = alpha.shape
    area = float(alpha.sum())
    rows = alpha.max(axis=1)
    cols = alpha.max(axis=0)
    height = float(rows.sum())
    width = float(cols.sum())
    yy = np.arange(h, dtype=np.float64) + 0.5
    xx = np.arange(w, dtype=np.float64) + 0.5
    cy_support = float((rows * yy).sum() / max(rows.sum(), 1e-9))
    cx_support = float((cols * xx).sum() / max(cols.sum(), 1e-9))
    cy_mass = float((alpha.sum(axis=1) * yy).sum() / max(area, 1e-9))
    unit = 32.0 / h  # to 32-px canvas units
    return {
        "area": area * unit * unit,
        "width": width * unit,
        "height": height * unit,
        "fill": area / max(width * height, 1e-9),
        "offset": (cy_mass - cy_support) / max(height, 1e-9),
        "cx": cx_support * 32.0 / w,
        "cy": cy_support * unit,
    }


def shape_of(f: dict) -> str:
    if f["offset"] >= TRIANGLE_OFFSET:
        return "triangle"
    if f["fill"] >= FILL_SQUARE:
        return "square"
    if f["fill"] >= FILL_CIRCLE:
        return "circle"
    return "diamond"


def radius_of(f: dict, shape: str) -> float:
    """Radius (32-unit canvas) of a shape with the measured area."""
    return float(np.sqrt(f["area"] / _AREA_FACTOR[shape]))


def classify(f: dict) -> dict[str, str]:
    shape = shape_of(f)
    size = "large" if radius_of(f, shape) >= LARGE_RADIUS else "small"
    position = min(CENTERS, key=lambda k: (CENTERS[k][0] - f["cx"]) ** 2 + (CENTERS[k][1] - f["cy"]) ** 2)
    return {"size": size, "color": nearest_color(f["rgb"]), "shape": shape, "position": position}


def detect(image: np.ndarray) -> dict:
    """Attributes of the object in ``image``: {size, color, shape, position}.

    Every value is None when no object is found.  Accepts a PIL image too.
    """
    f = features(np.asarray(image))
    if f is None:
        return {a: None for a in ATTRIBUTES}
    return classify(f)


def matches(caption: str, image: np.ndarray) -> dict[str, bool]:
    """Per attribute: does the image show what the caption asks for?"""
    want = parse(caption)
    got = detect(image)
    return {a: got[a] == want[a] for a in ATTRIBUTES}


__all__ = ["detect", "matches", "features", "alpha_features", "classify", "shape_of", "radius_of", "nearest_color"]
