"""Benchmark images: real PNGs of a chosen pixel size whose byte size is close to a target.

Content is a smooth gradient plus uniform noise of ``k`` levels per channel, like a photo with
sensor noise: PNG cannot squeeze the noise out, JPEG can. ``k`` is calibrated on a small probe
(bytes per pixel do not depend on the image size), then the full image is encoded once.
"""

from __future__ import annotations

import functools
import io
import random

from PIL import Image, ImageChops

_PROBE = 256


def _noisy(width: int, height: int, levels: int, seed: int) -> Image.Image:
    """Gradient plus noise of ``levels`` steps per channel (1 = no noise)."""
    rng = random.Random(seed)
    table = bytes((i * levels) // 256 for i in range(256))
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3).translate(table))
    headroom = 255 - (levels - 1)
    gradient = Image.linear_gradient("L").resize((width, height)).point(lambda v: v * headroom // 255)
    return ImageChops.add(gradient.convert("RGB"), noise)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _bytes_per_sample(levels: int) -> float:
    """Compressed bytes per channel sample for noise of ``levels`` steps (measured on a probe)."""
    return len(_png(_noisy(_PROBE, _PROBE, levels, seed=levels))) / (_PROBE * _PROBE * 3)


def _levels_for(share: float) -> int:
    """The noise level count whose PNG comes closest to ``share`` of the raw size."""
    low, high = 1, 256
    while low < high:  # bytes per sample grow with the level count: bisect
        mid = (low + high) // 2
        if _bytes_per_sample(mid) < share:
            low = mid + 1
        else:
            high = mid
    below = max(1, low - 1)
    return min((below, low), key=lambda k: abs(_bytes_per_sample(k) - share))


@functools.cache
def sized_png(width: int, height: int, target_bytes: int, seed: int = 0) -> bytes:
    """A ``width``×``height`` PNG of about ``target_bytes`` (cached for the run)."""
    levels = _levels_for(target_bytes / (width * height * 3))
    return _png(_noisy(width, height, levels, seed))
