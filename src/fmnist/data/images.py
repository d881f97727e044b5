"""Bringing a user's image file to Fashion-MNIST's form: grey, light object on a dark background,
fitted into 28×28 with its aspect ratio kept, pixels in [0, 1]."""

from __future__ import annotations

import io
import math
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fmnist.errors import FmnistError

MAX_PIXELS = 40_000_000  # about 6300×6300; larger files are refused before they are decoded
WORK_PIXELS = 1_000_000  # a larger image is brought to about this size before any float copy
SIZE = 28
OBJECT_LEVEL = 0.1  # grey level (after background removal) above which a pixel is the object's


# Formats a photo or a drawing comes in; others (EPS, which runs Ghostscript, among them) are refused.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def decode(source: Path | BinaryIO, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image at no more than about WORK_PIXELS, refusing one that declares more than
    `max_pixels` before any pixel is decoded (a few KB can declare 40000×40000): what an image
    costs is then bounded whatever its size. Raises FmnistError saying what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source, formats=FORMATS)
            w, h = img.size
            if w * h > max_pixels or w <= 0 or h <= 0:
                raise FmnistError(f"{name}: {w}×{h} pixels is too large (limit {max_pixels:,} pixels)")
            factor = reduction(w, h)
            if factor > 1 and img.format == "JPEG":  # decoded at 1/2, 1/4 or 1/8 scale from the start
                img.draft(img.mode, (w // factor, h // factor))
            img.load()
            return ImageOps.exif_transpose(reduce(img))
    except FmnistError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FmnistError(f"{name}: image is too large (more than {max_pixels:,} pixels) to decode safely") from None
    except UnidentifiedImageError:
        raise FmnistError(f"{name}: not an image in a format fmnist reads ({', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct.error) as e:
        raise FmnistError(f"{name}: corrupt or truncated image ({e})") from None


def reduction(w: int, h: int) -> int:
    """The integer factor that brings w×h to at most about WORK_PIXELS (1: none needed)."""
    return max(1, math.ceil(math.sqrt(w * h / WORK_PIXELS)))


def reduce(img: Image.Image) -> Image.Image:
    """A decoded image larger than WORK_PIXELS averaged down by an integer factor (a box filter on
    its 8-bit pixels): the preprocessing's float work then costs a few MB, not hundreds."""
    factor = reduction(*img.size)
    if factor == 1:
        return img
    if img.mode not in ("L", "LA", "RGB", "RGBA", "La", "RGBa"):  # palette, 16-bit, CMYK: not reducible as such
        img = img.convert("RGBA" if "transparency" in img.info or "A" in img.getbands() else "RGB")
    return img.reduce(factor)


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, or raise FmnistError saying what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise FmnistError(f"{path}: no such file")
    if path.is_dir():
        raise FmnistError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise FmnistError(f"{path}: empty file")
    return decode(path, str(path))


def image_from_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an uploaded image (see decode)."""
    if not data:
        raise FmnistError(f"{name}: empty file")
    return decode(io.BytesIO(data), name, max_pixels)


def to_grey(img: Image.Image) -> np.ndarray:
    """Grey levels in [0, 1]; transparent areas count as a white background."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def to_fashion_mnist(grey: np.ndarray) -> torch.Tensor:
    """A 1×28×28 tensor: inverted if the background is light, cropped to the object, fitted, centred.
    An image already in the dataset's form (28×28, dark background) is taken as it is: cropped and
    fitted again, one in seven of the test images moved by a pixel and changed its answer."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if grey.shape == (SIZE, SIZE) and np.median(border) <= 0.5:
        return torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32)).unsqueeze(0)
    if np.median(border) > 0.5:
        grey = 1.0 - grey
    grey = grey - np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]))
    grey = np.clip(grey, 0.0, 1.0)
    if grey.max() > 0:  # stretch to the full range, as the dataset's images are
        grey = grey / grey.max()
    # The object's bounding box, ignoring faint noise (JPEG ringing stays below this).
    rows, cols = np.nonzero(grey > OBJECT_LEVEL)
    if len(rows):
        grey = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = grey.shape
    scale = SIZE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray((grey * 255).round().astype(np.uint8))
    if small.size != size:
        small = small.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    # The dataset puts an odd leftover pixel before the object, not after it: centred this way, an
    # image already in the dataset's form comes back unchanged.
    canvas.paste(small, ((SIZE - size[0] + 1) // 2, (SIZE - size[1] + 1) // 2))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).unsqueeze(0)


def load_image(path: Path) -> torch.Tensor:
    """Read an image file (PNG, JPEG, ...; any size; colour or grey) as a 1×28×28 tensor."""
    return to_fashion_mnist(to_grey(open_image(path)))


def load_image_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """An uploaded image as a 1×28×28 tensor, by the same steps as load_image."""
    return to_fashion_mnist(to_grey(image_from_bytes(data, name, max_pixels)))


def to_png(image: torch.Tensor) -> bytes:
    """A 1×28×28 tensor in [0, 1] as PNG bytes: what the models saw, to show."""
    buf = io.BytesIO()
    Image.fromarray((image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()
