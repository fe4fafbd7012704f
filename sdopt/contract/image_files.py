"""Images a user gives sdopt (img2img and inpainting inputs, distillation images), read the way diffusers'
`load_image` reads them: EXIF orientation applied, any mode converted to RGB (or L for a mask). Beyond it,
16-bit and 32-bit samples are scaled to 8 bits instead of clipped, and the size a file declares is checked
before it is decoded.

Torch-free: the runtime's command line reads its inputs with it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sdopt.contract.errors import SdoptError
from sdopt.contract.safe_io import open_regular

MAX_INPUT_PIXELS = 8192 * 8192  # declared pixels of an input image (larger photos are refused before decoding)


def read_image(path: Path, what: str, mode: str = "RGB") -> np.ndarray:
    """(H, W, 3) uint8 for RGB, (H, W) uint8 for a mask ("L")."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with open_regular(path, what) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
                image = Image.open(f)
            width, height = image.size
            if width * height > MAX_INPUT_PIXELS:
                raise SdoptError(f"{what} {path}: declares {width}x{height} pixels, over the limit of "
                                 f"{MAX_INPUT_PIXELS:,} for an input image")
            image.load()
            image = ImageOps.exif_transpose(image)
            converted = _eight_bit(image).convert(mode)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SdoptError(f"{what} {path}: not an image sdopt can read ({text})") from None
    return np.asarray(converted)


def _eight_bit(image):
    """Images of 16-bit or 32-bit integer samples (mode I;16*, I) scaled to 8 bits (65535 -> 255), float ones (F)
    taken as [0, 1]; Pillow's own conversion would clip them."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64) / 257.0
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64) * 255.0
    else:
        return image
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W[, 3]) uint8 to `size` (height, width): bicubic for images, nearest for masks (2-D)."""
    from PIL import Image

    if pixels.shape[:2] == tuple(size):
        return pixels
    resample = Image.NEAREST if pixels.ndim == 2 else Image.BICUBIC
    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), resample))
