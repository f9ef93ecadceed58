"""The output sizes the image API accepts, and how members pick one.

The provider silently rewrites a size that is not in its table, so every size
is validated here before a request is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import gcd

from bot.i18n import _t, catalogs

AUTO = "auto"


@dataclass(frozen=True)
class OutputSize:
    """One of the provider's fixed output sizes."""

    width: int
    height: int

    @property
    def value(self) -> str:
        """The wire form: WIDTHxHEIGHT with a lowercase ASCII x."""
        return f"{self.width}x{self.height}"

    @property
    def ratio(self) -> str:
        """The aspect ratio as members know it (3:2, 16:9, 21:9 …)."""
        known = {
            (1280, 544): "21:9",
            (2048, 864): "21:9",
            (3840, 1632): "21:9",
        }
        if (self.width, self.height) in known:
            return known[(self.width, self.height)]
        d = gcd(self.width, self.height)
        w, h = self.width // d, self.height // d
        # Some sizes are near-ratios (848x1280 is ~2:3); name them by the closest common ratio.
        common = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
        exact = f"{w}:{h}"
        if exact in common:
            return exact
        target = self.width / self.height
        return min(common, key=lambda r: abs(int(r.split(":")[0]) / int(r.split(":")[1]) - target))

    @property
    def tier(self) -> str:
        """1K, 2K or 4K, by the longest side."""
        longest = max(self.width, self.height)
        if longest <= 1280:
            return "1K"
        if longest <= 2048:
            return "2K"
        return "4K"

    @property
    def label(self) -> str:
        """A readable label, e.g. ``2048×1360 · 3:2 · 2K``."""
        return f"{self.width}×{self.height} · {self.ratio} · {self.tier}"


_SIZE_VALUES = (
    "1280x1280 848x1280 1280x848 960x1280 1280x960 1024x1280 1280x1024 720x1280 1280x720 1280x544 "
    "2048x2048 1360x2048 2048x1360 1536x2048 2048x1536 1632x2048 2048x1632 1152x2048 2048x1152 2048x864 "
    "2880x2880 2336x3520 3520x2336 2480x3312 3312x2480 2560x3216 3216x2560 2160x3840 3840x2160 3840x1632"
).split()

SIZES: tuple[OutputSize, ...] = tuple(OutputSize(int(v.split("x")[0]), int(v.split("x")[1])) for v in _SIZE_VALUES)
_BY_VALUE = {s.value: s for s in SIZES}

AUTO_LABEL = _t("auto · keep the edited image's aspect ratio")

# The sizes offered in the Refine modal, where a select holds at most 25 options.
COMMON_SIZES: tuple[OutputSize, ...] = tuple(
    _BY_VALUE[v]
    for v in (
        "1280x1280 2048x2048 2880x2880 1280x848 2048x1360 3520x2336 848x1280 1360x2048 2336x3520 "
        "1280x720 2048x1152 3840x2160 720x1280 1152x2048 2160x3840 1280x960 2048x1536 960x1280 "
        "1536x2048 1280x544 3840x1632"
    ).split()
)


def normalize_size(text: str | None) -> str | None:
    """Return the API value for what a member typed, ``None`` for auto, or raise ``ValueError``.

    Accepts the wire form, the label form (``2048×1360 · 3:2 · 2K``), an upper-case X
    or a multiplication sign, and surrounding spaces.
    """
    if text is None:
        return None
    cleaned = text.strip().lower()
    if cleaned in ("", AUTO) or cleaned.startswith(AUTO + " "):
        return None
    cleaned = cleaned.split("·")[0].strip().replace("×", "x").replace(" ", "")
    if cleaned in _BY_VALUE:
        return cleaned
    raise ValueError(text)


_WXH = re.compile(r"^(\d{1,5})x(\d{1,5})$")


def parse_size_text(text: str | None) -> str | None:
    """What a member typed as a wire size (``WIDTHxHEIGHT``), ``None`` for auto, or raise ``ValueError``.

    Only the form is checked here (the table's labels, an upper-case X or a ×, spaces);
    whether a model accepts the size is ``bot.models.ImageModel.check_size``'s question.
    """
    try:
        return normalize_size(text)
    except ValueError:
        pass
    assert text is not None
    cleaned = text.strip().lower().split("·")[0].strip().replace("×", "x").replace(" ", "")
    match = _WXH.match(cleaned)
    if match is None:
        raise ValueError(text)
    return f"{int(match[1])}x{int(match[2])}"


def dimensions(value: str) -> tuple[int, int]:
    """``(width, height)`` of a wire size such as ``2048x1360``."""
    width, _, height = value.partition("x")
    return int(width), int(height)


def size_choices(query: str, language: str | None = None, limit: int = 25) -> list[tuple[str, str]]:
    """(label, value) pairs matching what was typed so far, at most ``limit`` of them (``auto``'s in ``language``)."""
    needle = query.strip().lower().replace("×", "x").replace(" ", "")
    options = [(catalogs().render(AUTO_LABEL, language), AUTO)] + [(s.label, s.value) for s in SIZES]
    if needle:
        options = [
            (label, value)
            for label, value in options
            if needle in value or needle in label.lower().replace(" ", "").replace("×", "x")
        ]
    return options[:limit]


def size_of(value: str | None) -> OutputSize | None:
    """The table entry for an API value, or ``None`` for auto."""
    return _BY_VALUE.get(value) if value else None
