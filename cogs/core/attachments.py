"""A member's image files before anything is charged: how many an edit takes, how large one may be, what it is.

``/edit``'s attachments and the files added in the Refine and "Edit images" forms pass the
same checks here, from what Discord says about each file (its size and declared type), so a
file that cannot work is refused at once, privately, before the job is accepted. What only
the bytes can tell (a damaged file, a decompression bomb, a re-encoding) is the engine's
check once the files are fetched (``bot.media.images.prepare_input``), the same for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from bot.errors import InputError
from bot.i18n import _t
from bot.media.images import not_an_image

MAX_IMAGES = 10
# Refused before download: far beyond anything the API takes, even after re-encoding.
MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024


class DeclaredFile(Protocol):
    """What Discord says about a file before it is fetched (a ``discord.Attachment`` says it)."""

    @property
    def size(self) -> int: ...

    @property
    def content_type(self) -> str | None: ...


F = TypeVar("F", bound=DeclaredFile)


def too_large(name: str, size: int) -> InputError:
    """The refusal of an image file ``name`` of ``size`` bytes, beyond ``MAX_ATTACHMENT_BYTES``."""
    return InputError(
        # Translators: {name} is an image (image1, …) or a file name; {size} and {limit} are in megabytes.
        _t(
            "{name} is {size} MB; files up to {limit} MB are accepted.",
            name=name,
            size=f"{size / 1_000_000:.0f}",
            limit=MAX_ATTACHMENT_BYTES // 1_000_000,
        )
    )


def check_file(name: str, file: DeclaredFile) -> None:
    """Refuse the file that will be ``name`` (image1, …) if it is too large or declares itself no image.

    A file without a declared type is left to the check of its bytes.
    """
    if file.size > MAX_ATTACHMENT_BYTES:
        raise too_large(name, file.size)
    declared = (file.content_type or "").split(";")[0].strip().lower()
    if declared and not declared.startswith("image/"):
        raise InputError(not_an_image(name))


def too_many(count: int) -> InputError:
    """The refusal of an edit of ``count`` images, more than ``MAX_IMAGES``."""
    return InputError(
        # Translators: {count} is always more than {limit} (10).
        _t(
            "That makes {count} images, and an edit takes at most {limit}. Add fewer images and send it again.",
            count=count,
            limit=MAX_IMAGES,
        )
    )


def added_images(before: int, files: Sequence[F]) -> list[tuple[str, F]]:
    """``files`` named after the ``before`` images already in the edit (image{before+1}, …), each checked.

    Refuses the whole edit when it would have more than ``MAX_IMAGES`` images.
    """
    if before + len(files) > MAX_IMAGES:
        raise too_many(before + len(files))
    named = [(f"image{number}", file) for number, file in enumerate(files, start=before + 1)]
    for name, file in named:
        check_file(name, file)
    return named
