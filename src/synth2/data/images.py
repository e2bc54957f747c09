"""Safe image decoding: every way an image file can be bad, named.

`decode_image` returns an RGB uint8 array or raises `BadImage(reason)`. Odd modes
(L, LA, P, RGBA, CMYK, I;16, ...) are converted where that is safe and the
conversion is reported; unreadable, truncated, tiny or absurdly large images are
refused before their pixels are decoded.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MIN_SIDE = 8


class BadImage(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> tuple[np.ndarray, str | None]:
    """Decode image bytes to RGB uint8 (H, W, 3); returns (pixels, conversion or None)."""
    if len(data) == 0:
        raise BadImage("zero_byte")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size  # header only; pixels not decoded yet
            if width * height > max_pixels:
                raise BadImage("too_large", f"{width}x{height} > {max_pixels} pixels")
            if min(width, height) < min_side:
                raise BadImage("too_small", f"{width}x{height}")
            image.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too_large", str(e)) from None
    except UnidentifiedImageError:
        raise BadImage("not_an_image") from None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL reports truncated streams and broken headers as OSError/SyntaxError
        raise BadImage("truncated", str(e)) from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> tuple[np.ndarray, str | None]:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8), None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clip
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        grey = np.clip(np.rint(array / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), f"mode_{mode}"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # composite transparency over white, as a viewer would show it
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8), f"mode_{mode}"
    return np.asarray(image.convert("RGB"), dtype=np.uint8), f"mode_{mode}"


def read_image_file(path: str | Path, **limits) -> tuple[np.ndarray, str | None]:
    path = Path(path)
    if not path.exists():
        raise BadImage("missing_file", str(path))
    if not path.is_file():
        raise BadImage("not_a_file", str(path))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadImage("unreadable_file", f"{path}: {e.strerror}") from None
    return decode_image(data, **limits)


def encode_png(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def resize_center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size`, then a centred square crop (img2dataset's center_crop)."""
    h, w = pixels.shape[:2]
    if (h, w) == (size, size):
        return pixels
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    image = Image.fromarray(pixels).resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
