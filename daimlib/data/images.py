"""Reading one image file, tolerant of every mode Pillow reads, refusing decompression bombs; the
error type and help line every data loader shares."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DATA_HELP = "see data/README.md for where the datasets come from and the expected layout"


class _OriginalMessage:
    """Shows the original message when a DataLoader worker re-raised the error.

    torch re-raises a worker's exception in the main process as ``type("Caught X in DataLoader worker
    process N. Original Traceback ... X: message")``; the kit's data errors print just ``message``
    (and say it came from a worker), so the command line shows what is wrong, not a traceback.
    """

    def __str__(self) -> str:
        return original_message(super().__str__(), type(self).__name__)  # type: ignore[misc]


def original_message(text: str, type_name: str) -> str:
    """The message inside torch's "Caught ... in DataLoader worker" wrapper (``text`` when not wrapped)."""
    head = text.split("\n", 1)[0]
    if not (head.startswith("Caught ") and "DataLoader worker" in head and "Original Traceback" in text):
        return text
    idx = text.rfind(f"{type_name}: ")
    if idx < 0:
        return text
    return (
        text[idx + len(type_name) + 2 :].rstrip()
        + f" ({head[len('Caught ') + len(type_name) + 1 :].rstrip('.')})"
    )


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """An exception of the same type carrying the original message of one a DataLoader worker raised
    (``exc`` itself when it is not such a wrapper, or its type cannot be rebuilt from a message)."""
    text = str(exc)
    clean = original_message(text, type(exc).__name__)
    if clean == text:
        return exc
    try:
        return type(exc)(clean)
    except Exception:  # noqa: BLE001 - a type that takes other arguments: keep the wrapper
        return exc


class DatasetFormatError(_OriginalMessage, ValueError):
    """A dataset file exists but does not have the expected content."""


class ImageNotFoundError(_OriginalMessage, FileNotFoundError):
    """An image file a split names does not exist."""


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
        raise ImageNotFoundError(f"image file not found: {path.name} (looked in {path.parent}); {DATA_HELP}")
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
