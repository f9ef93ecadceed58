"""Pure parts: the size table, input checks, output checks and re-encoding."""

from __future__ import annotations

import io
import os
import random

import pytest
from PIL import Image

from bot.core.sizes import SIZES, normalize_size, size_choices
from bot.errors import InputError, InvalidResponseError
from bot.media.images import OutputImage, check_output, fit_for_upload, is_transparent, prepare_input


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int) -> Image.Image:
    """An image that does not compress, so sizes are predictable."""
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def test_size_table_has_the_thirty_provider_sizes() -> None:
    assert len(SIZES) == 30 and len({s.value for s in SIZES}) == 30
    assert SIZES[0].value == "1280x1280" and SIZES[-1].value == "3840x1632"


def test_size_labels_read_well() -> None:
    labels = {s.value: s.label for s in SIZES}
    assert labels["2048x1360"] == "2048×1360 · 3:2 · 2K"
    assert labels["3840x2160"] == "3840×2160 · 16:9 · 4K"
    assert labels["1280x544"] == "1280×544 · 21:9 · 1K"


@pytest.mark.parametrize(
    ("typed", "value"),
    [
        ("2048x1360", "2048x1360"),
        (" 2048X1360 ", "2048x1360"),
        ("2048×1360 · 3:2 · 2K", "2048x1360"),
        ("auto", None),
        ("", None),
    ],
)
def test_normalize_size_accepts_table_values(typed: str, value: str | None) -> None:
    assert normalize_size(typed) == value


@pytest.mark.parametrize("typed", ["1024x1024", "big", "2048x1361", "3840"])
def test_normalize_size_refuses_sizes_off_the_table(typed: str) -> None:
    with pytest.raises(ValueError):
        normalize_size(typed)


def test_size_choices_filter_and_cap_at_25() -> None:
    assert len(size_choices("")) == 25
    assert [v for _, v in size_choices("16:9")] == ["1280x720", "2048x1152", "3840x2160"]
    assert all("3840" in v for _, v in size_choices("3840"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_pass_through_formats_are_sent_byte_for_byte(fmt: str) -> None:
    data = encode(Image.new("RGB", (40, 30), (9, 9, 9)), fmt)
    prepared = prepare_input(data, "image1", 4_000_000)
    assert prepared.data == data and prepared.note is None


def test_other_formats_become_png() -> None:
    data = encode(Image.new("RGB", (40, 30)), "GIF")
    prepared = prepare_input(data, "image2", 4_000_000)
    assert prepared.mime == "image/png" and prepared.data.startswith(b"\x89PNG")


def test_non_image_is_refused_by_name() -> None:
    with pytest.raises(InputError, match="image3 is not an image"):
        prepare_input(b"%PDF-1.4 not an image at all", "image3", 4_000_000)


def test_corrupt_image_is_refused() -> None:
    data = encode(noise(64, 64), "PNG")
    with pytest.raises(InputError, match="image1 is damaged"):
        prepare_input(data[: len(data) // 2], "image1", 4_000_000)


def test_decompression_bomb_is_refused() -> None:
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")  # tiny file, 400 megapixels
    assert len(bomb) < 200_000
    with pytest.raises(InputError, match="image4 is too large"):
        prepare_input(bomb, "image4", 4_000_000)


def test_oversized_input_is_reencoded_to_fit_and_says_so() -> None:
    data = encode(noise(1500, 1500), "PNG")
    assert len(data) > 4_000_000
    prepared = prepare_input(data, "image2", 2_000_000)
    assert len(prepared.data) <= 2_000_000
    assert prepared.note and "image2" in str(prepared.note)


def test_check_output_refuses_truncated_png() -> None:
    data = encode(noise(100, 100), "PNG")
    assert check_output(data).width == 100
    with pytest.raises(InvalidResponseError):
        check_output(data[:-100])


def test_fit_for_upload_keeps_small_results_and_shrinks_large_ones() -> None:
    random.seed(1)
    small = check_output(encode(Image.new("RGB", (50, 50)), "PNG"))
    assert fit_for_upload(small, 1_000_000) is small
    big = check_output(encode(noise(1200, 900), "PNG"))
    fitted = fit_for_upload(big, 1_000_000)
    assert len(fitted.data) <= 1_000_000
    assert fitted.note and "upload limit" in str(fitted.note)


def test_a_near_miss_is_losslessly_reencoded_first() -> None:
    flat = encode(Image.new("RGB", (800, 800), (30, 60, 90)), "PNG", compress_level=0)  # big, very compressible
    output = check_output(flat)
    fitted = fit_for_upload(output, int(len(flat) * 0.95))
    assert fitted.mime == "image/webp" and (fitted.width, fitted.height) == (800, 800)
    assert fitted.note and "losslessly re-encoded as WebP" in str(fitted.note)
    far = fit_for_upload(output, len(flat) // 3)  # far over: straight to a lossy format
    assert far.note and "losslessly" not in str(far.note)


def sideways_jpeg(orientation: int, size: tuple[int, int] = (60, 30), noise: bool = False) -> bytes:
    """A JPEG whose stored top-left quarter is red, with an EXIF orientation tag."""
    width, height = size
    image = (
        Image.frombytes("RGB", size, os.urandom(width * height * 3)) if noise else Image.new("RGB", size, (0, 0, 255))
    )
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [(3, (60, 30), (55, 27)), (6, (30, 60), (27, 4)), (8, (30, 60), (4, 55))],
    ids=["upside-down", "turned-right", "turned-left"],
)
def test_a_jpeg_with_an_exif_orientation_is_turned_upright(
    orientation: int, size: tuple[int, int], red_at: tuple[int, int]
) -> None:
    prepared = prepare_input(sideways_jpeg(orientation), "image1", 4 * 1024 * 1024)
    assert prepared.mime == "image/jpeg" and (prepared.width, prepared.height) == size
    assert str(prepared.note) == "image1 was turned upright, as its EXIF orientation says, and re-encoded"
    with Image.open(io.BytesIO(prepared.data)) as image:
        assert image.size == size and image.getexif().get(0x0112) is None
        assert image.convert("RGB").getpixel(red_at)[0] > 200


def test_an_oversized_sideways_jpeg_is_turned_before_it_is_shrunk() -> None:
    data = sideways_jpeg(6, (1200, 800), noise=True)
    prepared = prepare_input(data, "image2", len(data) // 3)
    assert (prepared.width, prepared.height) < (800, 1200) and prepared.height > prepared.width
    assert prepared.note is not None and "turned upright" in str(prepared.note) and len(prepared.data) <= len(data) // 3


def test_an_upright_jpeg_and_other_formats_with_exif_pass_through() -> None:
    upright = sideways_jpeg(1)
    assert prepare_input(upright, "image1", 4 * 1024 * 1024).data == upright
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (20, 10)).save(buffer, format="PNG", exif=exif.tobytes())
    png = buffer.getvalue()
    assert prepare_input(png, "image1", 4 * 1024 * 1024).data == png  # only JPEGs are turned


# A result in the format asked, its transparency kept -------------------------------------------------------


def sticker(side: int = 500, fmt: str = "PNG") -> OutputImage:
    """A noisy image (hard to compress) whose left half is fully transparent, as a result."""
    image = Image.frombytes("RGBA", (side, side), os.urandom(side * side * 4))
    image.putalpha(255)
    image.paste((0, 0, 0, 0), (0, 0, side // 2, side))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return check_output(buffer.getvalue())


def decoded(output: OutputImage) -> Image.Image:
    image = Image.open(io.BytesIO(output.data))
    image.load()
    return image


@pytest.mark.parametrize(("fmt", "pil", "mime"), [("png", "PNG", "image/png"), ("webp", "WEBP", "image/webp")])
def test_a_transparent_result_fitted_in_the_format_asked_keeps_its_transparency(fmt: str, pil: str, mime: str) -> None:
    original = sticker()
    limit = len(original.data) // 3
    fitted = fit_for_upload(original, limit, fmt)
    image = decoded(fitted)
    assert fitted.mime == mime and image.format == pil and len(fitted.data) <= limit
    assert image.mode == "RGBA" and image.getchannel("A").getextrema() == (0, 255)
    assert image.getpixel((0, image.height // 2))[3] == 0
    assert "upload limit" in str(fitted.note) and "flattened" not in str(fitted.note)


def test_without_a_format_asked_a_transparent_result_is_never_made_a_jpeg() -> None:
    fitted = fit_for_upload(sticker(), 60_000)
    assert fitted.mime == "image/webp" and decoded(fitted).getchannel("A").getextrema()[0] == 0


def test_a_jpeg_made_from_a_transparent_result_says_it_was_flattened() -> None:
    original = sticker(200)
    converted = fit_for_upload(original, 10 * len(original.data), "jpeg")
    assert converted.mime == "image/jpeg" and decoded(converted).mode == "RGB"
    assert str(converted.note) == "Its transparent background was flattened onto white, since JPEG has no transparency."
    assert decoded(converted).getpixel((0, 0)) == (255, 255, 255)
    shrunk = fit_for_upload(sticker(), 30_000, "jpeg")
    assert shrunk.mime == "image/jpeg" and len(shrunk.data) <= 30_000
    assert "upload limit" in str(shrunk.note) and "flattened onto white" in str(shrunk.note)
    opaque = check_output(encode(noise(200, 200), "PNG"))
    assert fit_for_upload(opaque, 10 * len(opaque.data), "jpeg").note is None  # nothing to flatten: nothing to say


def test_a_result_in_another_format_than_asked_is_delivered_in_the_one_asked() -> None:
    original = sticker(120)
    as_webp = fit_for_upload(original, 10 * len(original.data), "webp")
    assert (
        as_webp.mime == "image/webp" and as_webp.note is None and decoded(as_webp).getchannel("A").getextrema()[0] == 0
    )
    assert fit_for_upload(original, 10 * len(original.data), "png") is original  # already what was asked
    assert is_transparent(decoded(original)) and not is_transparent(Image.new("RGBA", (4, 4), (1, 2, 3, 255)))


def test_a_result_that_outgrows_the_limit_in_the_format_asked_is_scaled_and_says_so() -> None:
    photo = check_output(encode(noise(400, 400), "JPEG", quality=60))
    limit = len(photo.data) + 1000  # the JPEG fits; as a PNG it would not
    fitted = fit_for_upload(photo, limit, "png")
    assert fitted.mime == "image/png" and len(fitted.data) <= limit and fitted.width < 400
    assert str(fitted.note).startswith("In the format asked it was over Discord's")
