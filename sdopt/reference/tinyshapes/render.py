"""Pillow renderer: tiny-shapes caption (+ seed for jitter) -> RGB uint8 image.

Images are ``IMAGE_SIZE`` x ``IMAGE_SIZE`` (32) pixels: one filled, antialiased
shape (drawn at 4x and box-downsampled) on a fixed dark background.  The
geometry is defined on a 32-pixel canvas and scales with ``size``.

Jitter (from ``numpy.random.default_rng(seed)``): centre +-0.75 px, radius
+-0.4 px (small) / +-0.5 px (large), each colour channel +-10.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from sdopt.reference.tinyshapes.grammar import ATTRIBUTES, parse

IMAGE_SIZE = 32
SUPERSAMPLE = 4

BACKGROUND = (24, 24, 32)

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (250, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 190, 60),
    "cyan": (40, 210, 220),
    "blue": (50, 80, 235),
    "purple": (160, 60, 210),
    "white": (240, 240, 240),
}

#: nominal half extent (32-px canvas units) and its jitter
RADIUS = {"small": (4.5, 0.4), "large": (6.75, 0.5)}
#: object centre (x, y) on the 32-px canvas
CENTERS: dict[str, tuple[float, float]] = {
    "top left": (8.0, 8.0),
    "top right": (24.0, 8.0),
    "bottom left": (8.0, 24.0),
    "bottom right": (24.0, 24.0),
    "center": (16.0, 16.0),
}
CENTER_JITTER = 0.75
COLOR_JITTER = 10
#: half side of a square relative to the radius (keeps square and circle areas close)
SQUARE_HALF = 0.88


def shape_polygon(shape: str, cx: float, cy: float, r: float):
    """Outline of a shape: ('ellipse', bbox) or ('polygon', points)."""
    if shape == "circle":
        return "ellipse", [cx - r, cy - r, cx + r, cy + r]
    if shape == "square":
        s = SQUARE_HALF * r
        return "polygon", [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":  # apex up, width = height = 2r
        return "polygon", [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return "polygon", [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"unknown shape {shape!r}")


def draw_shape(draw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """Fill a shape on a PIL ImageDraw, in its pixel coordinates."""
    kind, geom = shape_polygon(shape, cx, cy, r)
    if kind == "ellipse":
        draw.ellipse(geom, fill=fill)
    else:
        draw.polygon(geom, fill=fill)


def render_attrs(attrs: dict, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render an attribute dict (size, color, shape, position) -> (size, size, 3) uint8."""
    missing = [a for a in ATTRIBUTES if a not in attrs]
    if missing:
        raise ValueError(f"missing attributes {missing}")
    rng = np.random.default_rng(int(seed))
    r0, rj = RADIUS[attrs["size"]]
    r = r0 + rng.uniform(-rj, rj)
    cx, cy = CENTERS[attrs["position"]]
    cx += rng.uniform(-CENTER_JITTER, CENTER_JITTER)
    cy += rng.uniform(-CENTER_JITTER, CENTER_JITTER)
    base = np.array(PALETTE[attrs["color"]], dtype=np.int64)
    color = tuple(int(v) for v in np.clip(base + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3), 0, 255))

    scale = size * SUPERSAMPLE / 32.0
    big = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), BACKGROUND)
    draw = ImageDraw.Draw(big)
    draw_shape(draw, attrs["shape"], cx * scale, cy * scale, r * scale, color)
    small = big.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.uint8).copy()


def render(caption: str, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render a grammar caption -> (size, size, 3) uint8 RGB array."""
    return render_attrs(parse(caption), seed=seed, size=size)


def background_of(caption: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 background the caption's image is drawn on (the same for every caption)."""
    return np.broadcast_to(np.array(BACKGROUND, dtype=np.uint8), (size, size, 3)).copy()


def render_pil(caption: str, seed: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    return Image.fromarray(render(caption, seed, size))


def render_batch(pairs, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render [(caption, seed), ...] -> (N, size, size, 3) uint8."""
    out = np.empty((len(pairs), size, size, 3), dtype=np.uint8)
    for i, (caption, seed) in enumerate(pairs):
        out[i] = render(caption, seed, size)
    return out


__all__ = [
    "IMAGE_SIZE",
    "BACKGROUND",
    "PALETTE",
    "RADIUS",
    "CENTERS",
    "render",
    "render_attrs",
    "render_pil",
    "render_batch",
    "background_of",
    "shape_polygon",
    "draw_shape",
]
