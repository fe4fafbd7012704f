"""Pillow renderer: tiny-scenes caption (+ seed for jitter) -> RGB uint8 image.

Geometry is defined on a 32-unit canvas and scales with the image size. Two objects sit in the left and
right halves (horizontal scenes) or the top and bottom halves (vertical scenes), centred on the other
axis with a jitter; one object sits near the centre. Objects are drawn at 4x and box-downsampled. The
two-tone background is darker above the middle line than below it; both tones are dark and grey so that
every palette colour stands out from either.

Jitter (``numpy.random.default_rng(seed)``): centre +-0.75 along the relation's axis and +-3 across it
(+-3 both ways for one object), radius +-0.3 (small) / +-0.4 (large), each colour channel +-10.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from sdopt.reference.tinyscenes.grammar import Scene, parse
from sdopt.reference.tinyshapes.render import PALETTE, draw_shape

IMAGE_SIZE = 32
SUPERSAMPLE = 4
TONES = {"top": (24, 24, 32), "bottom": (60, 60, 70)}  # the two-tone background; plain is all "top"
RADIUS = {"small": (4.0, 0.3), "large": (6.0, 0.4)}  # nominal half extent and its jitter (32-unit canvas)
SLOTS = {"horizontal": ((8.0, 16.0), (24.0, 16.0)), "vertical": ((16.0, 8.0), (16.0, 24.0)), None: ((16.0, 16.0),)}
AXIS_JITTER = 0.75
CROSS_JITTER = 3.0
COLOR_JITTER = 10
JITTER = {"horizontal": (AXIS_JITTER, CROSS_JITTER), "vertical": (CROSS_JITTER, AXIS_JITTER),
          None: (CROSS_JITTER, CROSS_JITTER)}  # axis -> centre jitter in x, y


def background(kind: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 background of a scene."""
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[:] = TONES["top"]
    if kind == "two-tone":
        out[size // 2:] = TONES["bottom"]
    return out


def background_of(caption: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 background the caption's image is drawn on."""
    return background(parse(caption).background, size)


def render_scene(scene: Scene, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    rng = np.random.default_rng(int(seed))
    big = Image.fromarray(background(scene.background, size * SUPERSAMPLE))
    draw = ImageDraw.Draw(big)
    scale = size * SUPERSAMPLE / 32.0
    for (obj_size, color, shape), (cx, cy) in zip(scene.objects, SLOTS[scene.axis]):
        r0, rj = RADIUS[obj_size]
        r = r0 + rng.uniform(-rj, rj)
        jx, jy = JITTER[scene.axis]
        cx += rng.uniform(-jx, jx)
        cy += rng.uniform(-jy, jy)
        rgb = np.clip(np.array(PALETTE[color]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3), 0, 255)
        draw_shape(draw, shape, cx * scale, cy * scale, r * scale, tuple(int(v) for v in rgb))
    return np.asarray(big.resize((size, size), Image.BOX), dtype=np.uint8).copy()


def render(caption: str, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render a grammar caption -> (size, size, 3) uint8 RGB array."""
    return render_scene(parse(caption), seed, size)


def render_batch(pairs, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render [(caption, seed), ...] -> (N, size, size, 3) uint8."""
    out = np.empty((len(pairs), size, size, 3), dtype=np.uint8)
    for i, (caption, seed) in enumerate(pairs):
        out[i] = render(caption, seed, size)
    return out


__all__ = ["IMAGE_SIZE", "TONES", "RADIUS", "SLOTS", "background", "background_of", "render", "render_scene",
           "render_batch"]
