"""Tiled VAE decoding: large images in little memory.

The latents are cut into overlapping square tiles (a quarter of a tile's side overlaps its neighbour),
each tile is decoded alone, and the decoded tiles are blended with weights that ramp linearly across the
overlaps (flat inside, and at the image's own borders). Peak memory follows the tile, not the image. The
result differs slightly from one decode of the whole latent: the decoder's attention and group norms see
one tile at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every `stride`, the last one flush with the end."""
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile, stride))
    return origins + [length - tile]


def ramp(size: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """Blend weights of one tile along one axis: rising over the overlap unless at the image's start, falling
    over it unless at the image's end."""
    i = np.arange(size, dtype=np.float32) + 0.5
    w = np.ones(size, np.float32)
    if overlap > 0:
        if not first:
            w = np.minimum(w, i / overlap)
        if not last:
            w = np.minimum(w, (size - i) / overlap)
    return w


def decode_tiled(decode: Callable[[np.ndarray], np.ndarray], z: np.ndarray, tile: int, factor: int) -> np.ndarray:
    """`decode((1, C, t, t) latents) -> (1, 3, t * factor, t * factor)` over tiles of `tile` latent pixels."""
    _, _, h, w = z.shape
    overlap = tile // 4
    rows, cols = starts(h, tile, tile - overlap), starts(w, tile, tile - overlap)
    total = np.zeros((1, 3, h * factor, w * factor), np.float32)
    weight = np.zeros((1, 1, h * factor, w * factor), np.float32)
    for r in rows:
        for c in cols:
            part = decode(z[:, :, r:r + tile, c:c + tile])
            th, tw = part.shape[-2:]
            wy = ramp(th, overlap * factor, r == 0, r + tile >= h)
            wx = ramp(tw, overlap * factor, c == 0, c + tile >= w)
            window = wy[:, None] * wx[None, :]
            y, x = r * factor, c * factor
            total[:, :, y:y + th, x:x + tw] += part * window
            weight[:, :, y:y + th, x:x + tw] += window
    return total / weight
