"""Reading one image file, tolerant of every mode Pillow reads, refusing decompression bombs; the
error type and help line every data loader shares."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DATA_HELP = "see data/README.md for where the datasets come from and the expected layout"


class DatasetFormatError(ValueError):
    """A dataset file exists but does not have the expected content."""


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            im = im.point(lambda v: v / 256).convert("L") if im.mode != "F" else im.convert("L")
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return im.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open any image Pillow reads (RGB, L, 1, P, RGBA, LA, CMYK, I;16) as an RGB image.

    Transparent pixels are composited onto white (dropping alpha would expose arbitrary colours).
    An image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (a decompression bomb: a small file
    that decodes to gigabytes) is refused with an error naming the file, never decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path.name} (looked in {path.parent}); {DATA_HELP}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _open_rgb(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetFormatError(
            f"refusing image {path.name}: it decodes to more than {Image.MAX_IMAGE_PIXELS:,} pixels "
            f"(a decompression bomb, or a huge scan: {e}); downscale or remove it"
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetFormatError(
            f"cannot read image {path.name}: {e}; the file is corrupt or not an image"
        ) from e
