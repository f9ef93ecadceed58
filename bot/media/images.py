"""Image checks and re-encoding: inputs made safe for the API, outputs made to fit Discord.

Everything here is CPU work on bytes and is called through ``asyncio.to_thread``
by the engine, so it never blocks the event loop. Nothing here knows Discord.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.errors import InputError, InvalidResponseError
from bot.i18n import Text, _t

# Larger than any real photo or screenshot, small enough that decoding cannot exhaust memory.
MAX_INPUT_PIXELS = 64_000_000

_MIME_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EXT_BY_MIME = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_EXIF_ORIENTATION = 0x0112  # 1 = upright; phones write 3, 6 or 8 instead of turning the pixels
UPRIGHT_JPEG_QUALITY = 95


@dataclass(frozen=True)
class PreparedImage:
    """An input ready for the API: bytes, their type, and what was done to them."""

    data: bytes
    mime: str
    width: int
    height: int
    note: Text | None = None  # e.g. "image2 was re-encoded to fit 3 MB"

    @property
    def extension(self) -> str:
        """File extension matching ``mime``."""
        return _EXT_BY_MIME[self.mime]


@dataclass(frozen=True)
class OutputImage:
    """A decoded API result (or its re-encoded, upload-sized version)."""

    data: bytes
    mime: str
    width: int
    height: int
    note: Text | None = None

    @property
    def extension(self) -> str:
        """File extension matching ``mime``."""
        return _EXT_BY_MIME[self.mime]


@dataclass(frozen=True)
class InputPreview:
    """One input of a result as the result shows it: its name and size as sent, and a small copy."""

    name: str  # image1, image2… (what the prompt calls it)
    width: int
    height: int
    size: int  # bytes, as sent to the API
    thumbnail: bytes | None = None  # a small JPEG; None when the inputs are shown together (a strip)


def sniff_format(data: bytes | memoryview) -> str | None:
    """The pass-through format of ``data`` by its magic bytes, or ``None``."""
    head = bytes(data[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def not_an_image(option: str) -> Text:
    """The refusal of a file ``option`` (image1, …) that is not an image."""
    return _t("{option} is not an image (png, jpeg or webp work best).", option=option)


def _open_checked(data: bytes, option: str, *, decode: bool) -> Image.Image:
    """Open ``data`` and check it; refuse non-images, damaged files and decompression bombs.

    With ``decode`` the pixels are decoded (needed to convert); without, the file's
    structure is verified (chunk checksums, end markers), which is enough to pass it on
    unchanged and costs a fraction of the time and memory.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_INPUT_PIXELS:
                raise InputError(
                    _t(
                        "{option} is too large ({width}×{height} pixels); the limit is {limit} megapixels.",
                        option=option,
                        width=image.width,
                        height=image.height,
                        limit=MAX_INPUT_PIXELS // 1_000_000,
                    )
                )
            if decode:
                image.load()
            else:
                _verify_structure(data, image)
                image = Image.open(io.BytesIO(data))  # verify() leaves the image unusable
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(
                _t("{option} is too large to decode safely; use a smaller image.", option=option)
            ) from None
        except UnidentifiedImageError:
            raise InputError(not_an_image(option)) from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise InputError(_t("{option} is damaged or incomplete; it could not be decoded.", option=option)) from None
    return image


def decode_image(data: bytes, option: str) -> Image.Image:
    """``data`` decoded, with the same refusals as an input (not an image, damaged, a decompression bomb)."""
    return _open_checked(data, option, decode=True)


def _verify_structure(data: bytes, image: Image.Image) -> None:
    """Raise ``SyntaxError``/``OSError`` if a png/jpeg/webp file is truncated or corrupt."""
    image.verify()
    fmt = sniff_format(data)
    if fmt == "JPEG" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise SyntaxError("JPEG is truncated")
    if fmt == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        raise SyntaxError("WebP is truncated")


def prepare_input(data: bytes, option: str, max_bytes: int) -> PreparedImage:
    """Check an uploaded file by its content and return what to send to the API.

    png/jpeg/webp within ``max_bytes`` pass through byte for byte, except a JPEG whose
    EXIF orientation is not upright: it is turned upright and re-encoded, so the API sees
    what the member saw. Other decodable formats become PNG; anything larger is
    re-encoded or scaled down to fit (turned upright first, since re-encoding drops EXIF).
    """
    if not data:
        raise InputError(_t("{option} is an empty file.", option=option))
    fmt = sniff_format(data)
    passes_through = fmt is not None and len(data) <= max_bytes
    image = _open_checked(data, option, decode=not passes_through)
    if passes_through:
        assert fmt is not None
        if fmt != "JPEG" or _orientation(image) == 1:
            return PreparedImage(data, _MIME_BY_FORMAT[fmt], image.width, image.height)
        return _upright_jpeg(image, option, max_bytes)
    if fmt is None and getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    turned = _orientation(image) != 1
    if turned:
        image = ImageOps.exif_transpose(image)
    if fmt is None:
        converted = _encode(_normalise_mode(image), "PNG")
        if len(converted) <= max_bytes:
            note = (
                _t("{option} was converted to PNG, turned upright as its EXIF orientation says", option=option)
                if turned
                else None
            )
            return PreparedImage(converted, "image/png", image.width, image.height, note=note)
    out = shrink_to_fit(image, max_bytes)
    sizes = {"option": option, "size": _mb(len(data)), "limit": _mb(max_bytes), "how": out.note}
    if fmt is None and turned:
        note = _t(
            "{option} was converted, turned upright as its EXIF orientation says, and re-encoded to fit {limit} "
            "({how})",
            **sizes,
        )
    elif fmt is None:
        note = _t("{option} was converted and re-encoded to fit {limit} ({how})", **sizes)
    elif turned:
        note = _t(
            "{option} was {size}, so it was turned upright as its EXIF orientation says, and re-encoded to fit "
            "{limit} ({how})",
            **sizes,
        )
    else:
        note = _t("{option} was {size}, so it was re-encoded to fit {limit} ({how})", **sizes)
    return PreparedImage(out.data, out.mime, out.width, out.height, note=note)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of ``image`` (1 = upright, also when there is none or it is unreadable)."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION) or 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1


def _upright_jpeg(image: Image.Image, option: str, max_bytes: int) -> PreparedImage:
    """A JPEG shown turned by its EXIF orientation, with the turn made in its pixels (and no EXIF left)."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError):
        raise InputError(_t("{option} is damaged or incomplete; it could not be decoded.", option=option)) from None
    upright = ImageOps.exif_transpose(image)
    note = _t("{option} was turned upright, as its EXIF orientation says, and re-encoded", option=option)
    pixels = upright if upright.mode in ("RGB", "L", "CMYK") else upright.convert("RGB")
    icc = image.info.get("icc_profile")
    data = _encode(pixels, "JPEG", quality=UPRIGHT_JPEG_QUALITY, **({"icc_profile": icc} if icc else {}))
    if len(data) <= max_bytes:
        return PreparedImage(data, "image/jpeg", upright.width, upright.height, note=note)
    out = shrink_to_fit(upright, max_bytes)
    note = _t(
        "{option} was turned upright, as its EXIF orientation says, and re-encoded ({how})", option=option, how=out.note
    )
    return PreparedImage(out.data, out.mime, out.width, out.height, note=note)


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Convert palette/CMYK/16-bit modes to RGB or RGBA, which every encoder takes."""
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    has_alpha = (image.mode in ("PA", "P") and "transparency" in image.info) or "A" in image.getbands()
    return image.convert("RGBA" if has_alpha else "RGB")


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def shrink_to_fit(image: Image.Image, max_bytes: int, *, lossless_first: bool = False) -> OutputImage:
    """Re-encode (and if need be scale down) ``image`` until it is at most ``max_bytes``.

    Order: lossless WebP (when asked), high-quality WebP with alpha or JPEG without,
    then the same at smaller scales. Always returns something that fits.
    """
    image = _normalise_mode(image)
    has_alpha = "A" in image.getbands()
    if lossless_first:
        data = _encode(image, "WEBP", lossless=True, method=1)
        if len(data) <= max_bytes:
            return OutputImage(data, "image/webp", image.width, image.height, _t("losslessly re-encoded as WebP"))
    scaled = image
    while True:
        if has_alpha:
            data = _encode(scaled, "WEBP", quality=90, method=4)
            mime = "image/webp"
        else:
            rgb = scaled.convert("RGB") if scaled.mode != "RGB" else scaled
            data = _encode(rgb, "JPEG", quality=90, optimize=True)
            mime = "image/jpeg"
        if len(data) <= max_bytes or max(scaled.size) <= 64:
            kind = "WebP" if has_alpha else "JPEG"
            how = (
                _t("re-encoded as {format} (quality 90)", format=kind)
                if scaled is image
                else _t(
                    "re-encoded as {format} (quality 90) and scaled down to {width}×{height}",
                    format=kind,
                    width=scaled.width,
                    height=scaled.height,
                )
            )
            return OutputImage(data, mime, scaled.width, scaled.height, how)
        # Bytes scale roughly with area; aim a little under the target.
        factor = max(0.25, min(0.9, (max_bytes / len(data)) ** 0.5 * 0.95))
        new_size = (max(1, int(scaled.width * factor)), max(1, int(scaled.height * factor)))
        scaled = image.resize(new_size, Image.Resampling.LANCZOS)


def check_output(data: bytes) -> OutputImage:
    """Verify an API result without decoding its pixels (cheap in time and memory).

    A truncated PNG fails its chunk checks; a truncated JPEG lacks its end marker.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidResponseError(f"result is not png/jpeg/webp (starts {bytes(data[:8])!r})")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            _verify_structure(data, image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidResponseError(f"result image is corrupt: {exc}") from None
    return OutputImage(data, _MIME_BY_FORMAT[fmt], width, height)


# Lossless WebP takes seconds on a 4K photo and saves ~10% of a PNG: worth trying only on a near miss.
LOSSLESS_TRY_RATIO = 1.1


def fit_for_upload(output: OutputImage, limit: int, fmt: str | None = None) -> OutputImage:
    """Return ``output`` unchanged if it fits Discord's upload ``limit`` (and is in ``fmt``, when one was asked:
    ``png``, ``jpeg`` or ``webp``), else a re-encoded copy that is.

    Without ``fmt`` a re-encoded copy is WebP when it has an alpha channel (transparency kept),
    else JPEG. With ``fmt`` the file stays in that format: a PNG or a WebP keeps its transparency
    whatever it takes to fit, and a JPEG made from a transparent result says it was flattened.
    """
    target = _MIME_BY_NAME.get(fmt or "")
    if len(output.data) <= limit and (target is None or output.mime == target):
        return output
    with Image.open(io.BytesIO(output.data)) as image:
        image.load()
        size = image.size
        if target is None:
            fitted = shrink_to_fit(image, limit, lossless_first=len(output.data) <= limit * LOSSLESS_TRY_RATIO)
            flattened = False
        else:
            fitted, flattened = _fit_in_format(image, limit, _FORMAT_OF_MIME[target])
    over = len(output.data) > limit
    scaled = (fitted.width, fitted.height) != size
    sizes = {"size": _mb(len(output.data)), "limit": _mb(limit), "how": fitted.note}
    if over and flattened:
        note: Text | None = _t(
            "The {size} original was over Discord's {limit} upload limit, so it was {how}; its transparent "
            "background was flattened onto white, since JPEG has no transparency.",
            **sizes,
        )
    elif over:
        note = _t("The {size} original was over Discord's {limit} upload limit, so it was {how}.", **sizes)
    elif scaled:  # it fitted as the service made it, but not in the format asked (a JPEG is never larger)
        note = _t("In the format asked it was over Discord's {limit} upload limit, so it was {how}.", **sizes)
    elif flattened:
        note = _t("Its transparent background was flattened onto white, since JPEG has no transparency.")
    else:
        note = None  # only turned into the format asked (the service answered in another)
    return OutputImage(fitted.data, fitted.mime, fitted.width, fitted.height, note=note)


_MIME_BY_NAME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_FORMAT_OF_MIME = {mime: fmt for fmt, mime in _MIME_BY_FORMAT.items()}


def is_transparent(image: Image.Image) -> bool:
    """Whether any pixel of ``image`` is not fully opaque."""
    image = _normalise_mode(image)
    if "A" not in image.getbands():
        return False
    extrema = image.getchannel("A").getextrema()
    return isinstance(extrema[0], int | float) and extrema[0] < 255


def _fit_in_format(image: Image.Image, max_bytes: int, fmt: str) -> tuple[OutputImage, bool]:
    """``image`` in ``fmt`` (PNG, JPEG or WEBP), scaled down until it is at most ``max_bytes``; and whether a
    transparent background had to be flattened (for JPEG only: PNG and WebP keep it)."""
    image = _normalise_mode(image)
    flattened = False
    if fmt == "JPEG":
        if is_transparent(image):
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
            flattened = True
        image = image.convert("RGB") if image.mode != "RGB" else image
    encodings: dict[str, dict[str, object]] = {
        "PNG": {},  # zlib's default level: "optimize" takes seconds on a 4K image for a few percent
        "JPEG": {"quality": 90, "optimize": True},
        "WEBP": {"quality": 90, "method": 4},
    }
    params = encodings[fmt]
    label = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}[fmt]
    scaled = image
    while True:
        data = _encode(scaled, fmt, **params)
        if len(data) <= max_bytes or max(scaled.size) <= 64:
            break
        factor = max(0.25, min(0.9, (max_bytes / len(data)) ** 0.5 * 0.95))
        new_size = (max(1, int(scaled.width * factor)), max(1, int(scaled.height * factor)))
        scaled = image.resize(new_size, Image.Resampling.LANCZOS)
    if fmt == "PNG":
        how = (
            _t("re-encoded as {format}", format=label)
            if scaled is image
            else _t(
                "re-encoded as {format} and scaled down to {width}×{height}",
                format=label,
                width=scaled.width,
                height=scaled.height,
            )
        )
    else:
        how = (
            _t("re-encoded as {format} (quality 90)", format=label)
            if scaled is image
            else _t(
                "re-encoded as {format} (quality 90) and scaled down to {width}×{height}",
                format=label,
                width=scaled.width,
                height=scaled.height,
            )
        )
    mime = _MIME_BY_FORMAT[fmt]
    return OutputImage(data, mime, scaled.width, scaled.height, how), flattened


PREVIEW_SIDE = 160


def make_preview(data: bytes, side: int = PREVIEW_SIDE) -> bytes:
    """A small WebP of an image (a few KB), for the audit channel; JPEGs are decoded at a reduced scale."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side * 2, side * 2))  # a JPEG decodes at 1/2..1/8 scale; a no-op for others
        image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        small = _normalise_mode(image)
        if small.mode not in ("RGB", "RGBA"):
            small = small.convert("RGBA" if "A" in small.getbands() else "RGB")
        return _encode(small, "WEBP", quality=60, method=4)


# A result's inputs as its card shows them: small JPEG copies (the members' own links expire).
THUMBNAIL_SIDE = 320
STRIP_HEIGHT = 160
STRIP_GAP = 4
THUMBNAIL_QUALITY = 80


def _small_rgb(data: bytes, box: tuple[int, int]) -> Image.Image:
    """``data`` decoded at about ``box`` (a JPEG at a reduced scale), upright and without alpha (on white)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (box[0] * 2, box[1] * 2))  # a JPEG decodes at 1/2..1/8 scale; a no-op for others
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image) if _orientation(image) != 1 else image
        upright.thumbnail(box, Image.Resampling.BILINEAR, reducing_gap=2.0)
        small = _normalise_mode(upright)
        if small is image:
            small = image.copy()  # small already; the file it was read from closes with this block
    if "A" in small.getbands():
        # Transparent pixels would turn black in a JPEG; white reads like the chat's own light background.
        flat = Image.new("RGB", small.size, (255, 255, 255))
        flat.paste(small, mask=small.getchannel("A"))
        return flat
    return small if small.mode == "RGB" else small.convert("RGB")


def make_thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes:
    """A small JPEG of an input (at most ``side`` pixels a side), for a result's card."""
    return _encode(_small_rgb(data, (side, side)), "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)


def make_strip(images: list[bytes], height: int = STRIP_HEIGHT, gap: int = STRIP_GAP) -> bytes:
    """Every input side by side, each ``height`` pixels high, in one small JPEG: a card's inputs in one file
    when there are too many for a file each (a message takes at most ten)."""
    tiles = [_small_rgb(data, (height * 3, height)) for data in images]
    width = sum(tile.width for tile in tiles) + gap * max(0, len(tiles) - 1)
    strip = Image.new("RGB", (max(1, width), height), (255, 255, 255))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, (height - tile.height) // 2))
        x += tile.width + gap
    return _encode(strip, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
