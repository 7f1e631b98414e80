"""Pillow frames as RGB uint8 arrays: modes, transparency, EXIF orientation and cheap shrinking.

Used by :mod:`core.video_io` for still images, GIFs and folders of frames.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.frames import cover_size

# What Pillow raises on a damaged file: its own errors, and from some decoders' parsers of a truncated or bit-flipped
# GIF or WebP an IndexError, a struct.error or an EOFError; DecompressionBomb* are not OSError subclasses.
PIL_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, IndexError, EOFError, struct.error,
                     Image.DecompressionBombError, Image.DecompressionBombWarning)  # fmt: skip


EXIF_ORIENTATION = 0x0112
EXIF_TRANSPOSE = {  # EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # fmt: skip


class FrameRefused(ValueError):
    """A frame that decodes but that tokvid does not take (no fixed range, a shape too far from the crop): its own
    message, not "cannot decode"."""


def exif_turn(image: Image.Image) -> Image.Transpose | None:
    """The transpose that still shows ``image`` upright by its EXIF orientation tag (the file's, for every frame).

    Pillow turns some formats itself as it loads them (TIFF, since Pillow 11) and then drops the tag: the frame is
    loaded first, so that such a file is not turned a second time (a quarter turn off, portrait read as landscape).
    """
    before = EXIF_TRANSPOSE.get(image.getexif().get(EXIF_ORIENTATION, 1))
    image.load()
    return before if EXIF_TRANSPOSE.get(image.getexif().get(EXIF_ORIENTATION, 1)) == before else None


def is_still(image: Image.Image) -> bool:
    """Whether the file is one picture whatever its frame count says: an MPO (a camera's or phone's JPEG that
    carries a second view or a preview after the photo) opens with two or more frames that are not time."""
    return image.format == "MPO"


def shrunk_rgb(image: Image.Image, size: int | tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 of a frame that is to be resized to ``size``: first shrunk by the largest integer box factor
    that leaves at least twice that size, so the antialiased resize works on a small frame (a 9000x9000 PNG of
    258 KB took 1.7 GB of copies to become 64x64). Grey and RGB frames are shrunk before their conversion; others
    (alpha laid over black, palettes) after it. A frame under four times the target on a side is left whole."""
    if size is None:
        return pil_rgb(image)
    try:
        new_h, new_w = cover_size(image.height, image.width, size)
    except ValueError as err:
        raise FrameRefused(str(err)) from None
    factor = min(image.height // (2 * new_h), image.width // (2 * new_w))
    if factor < 2:
        return pil_rgb(image)
    if image.mode in ("L", "RGB") and "transparency" not in image.info:
        return pil_rgb(image.reduce(factor))
    return np.asarray(Image.fromarray(pil_rgb(image)).reduce(factor))


ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})  # Pillow's modes with an alpha channel ("LAB" has none)


def pil_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of a Pillow frame.

    16-bit grey (modes ``I;16*``: 16-bit PNG and TIFF) is scaled to 8 bits; Pillow's own ``convert("RGB")`` clips
    it, so all but the darkest 1/256 of the range came back white. 32-bit integer and float images (modes ``I``
    and ``F``) have no fixed range and are refused with a ValueError. A transparent image (an alpha channel, or a
    transparent palette index or colour) is laid over black: ``convert("RGB")`` dropped the alpha and showed
    whatever colour a fully transparent pixel happened to store.
    """
    if image.mode.startswith("I;16"):
        grey = np.asarray(image).astype(np.uint32)  # (H, W) in 0..65535
        grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise FrameRefused(f"{kind} images have no fixed range; save the image with 8 or 16 bits per channel")
    if image.mode in ALPHA_MODES or "transparency" in image.info:  # an alpha channel, or a tRNS index or colour
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)  # (H, W, 4)
        return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)  # over black, rounded
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
