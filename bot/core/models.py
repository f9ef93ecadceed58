"""The image models servers may use: what each is called, what it takes, what a job on it costs.

The models come from the model catalog (``bot/core/models.toml``, and the operator's own
``MODELS_FILE``: ``bot.core.catalog`` reads them), or from the ``IMAGE_MODELS`` shorthand
``name=price[:rule]`` (``parse_models``). Each model says its sizes, its price (flat per image, or
by tokens: ``bot.core.pricing``), and the options it takes with their values (quality, output
format, compression, background), besides what later features need (a mask, streamed partials).

The provider silently rewrites a size or an option a model does not take, so both are checked
here, per model, before anything is charged or sent: an option a model lacks is never sent.

Sizes: ``table`` is the provider's 30 fixed sizes; ``any`` is both sides a positive multiple of
16, the long side at most 3:1 of the short one, the long side at most 3840 and the area at most
3840×2160 pixels (so 2880×2880, which is in the table, passes too: every table size fits the
``any`` rule); ``free`` is any WIDTHxHEIGHT, for a route that takes every size itself.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.core.money import MoneyError, format_price, parse_usd
from bot.core.pricing import Settlement, TokenPrice, Usage
from bot.core.region import Region
from bot.core.sizes import SIZES, dimensions, normalize_size
from bot.errors import InputError
from bot.i18n import Text, _pt, _t

MAX_SIDE = 3840
MAX_AREA = 3840 * 2160
MAX_RATIO = 3.0
SIDE_STEP = 16
# A call that makes a 4K image, or reads this many images, gets the model's longer timeout.
LARGE_SIDE = 2048
MANY_INPUTS = 5

# The options a member may ask for, by their name on the wire, in the order a request sends them.
QUALITY, OUTPUT_FORMAT, OUTPUT_COMPRESSION, BACKGROUND = "quality", "output_format", "output_compression", "background"
OPTION_NAMES = (QUALITY, OUTPUT_FORMAT, OUTPUT_COMPRESSION, BACKGROUND)
FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
TRANSPARENT = "transparent"
KEEPS_TRANSPARENCY = ("png", "webp")  # the formats a transparent background can be delivered in
COMPRESSES = ("jpeg", "webp")  # the formats output_compression applies to
# Not a member's option: how many partial images a job of a server with live previews on asks the model to
# stream (its wire name too, sent with ``stream=true``). Admission adds it, for a model that streams, and the
# job's reservation counts their tokens.
PARTIAL_IMAGES = "partial_images"
# How members know each option (the commands' option names), for refusals.
OPTION_LABELS = {
    QUALITY: _pt("option name", "quality"),
    OUTPUT_FORMAT: _pt("option name", "format"),
    OUTPUT_COMPRESSION: _pt("option name", "compression"),
    BACKGROUND: _pt("option name", "background"),
}


class SizeRule(enum.StrEnum):
    """Which output sizes a model accepts."""

    TABLE = "table"  # the provider's 30 fixed sizes (gpt-image-2-vip)
    ANY = "any"  # any width×height within the limits in this module's docstring
    FREE = "free"  # any width×height: the route checks sizes itself

    @classmethod
    def for_model(cls, name: str) -> SizeRule:
        """The rule a model gets when the operator names none."""
        return cls.TABLE if name.endswith("-vip") else cls.ANY

    def largest_pixels(self) -> int | None:
        """The most pixels an image of this rule has (``None``: no bound), for what auto may cost."""
        if self is SizeRule.TABLE:
            return max(s.width * s.height for s in SIZES)
        return MAX_AREA if self is SizeRule.ANY else None


@dataclass(frozen=True)
class ModelOptions:
    """The options a model takes, each with the values it allows (empty: it does not take it)."""

    quality: tuple[str, ...] = ()
    output_format: tuple[str, ...] = ()
    output_compression: tuple[int, int] | None = None  # the lowest and highest it takes
    background: tuple[str, ...] = ()

    def choices(self, name: str) -> tuple[str, ...]:
        """The values of a text option (quality, output_format, background) this model takes."""
        values: tuple[str, ...] = getattr(self, name) if name != OUTPUT_COMPRESSION else ()
        return values

    def takes(self, name: str) -> bool:
        return self.output_compression is not None if name == OUTPUT_COMPRESSION else bool(self.choices(name))


@dataclass(frozen=True)
class ImageModel:
    """One model: its name (what servers pick and jobs record), how it is called, what it takes and costs.

    ``price`` is a flat price per job in micro-dollars; a model with ``tokens`` is priced by
    tokens instead (``price`` is then unused).
    """

    name: str
    price: int
    sizes: SizeRule
    wire_name: str = ""  # the request's ``model`` field (empty: ``name``)
    edits_path: str = "/images/edits"  # below IMAGE_API_BASE
    generations_path: str = "/images/generations"  # empty: this model does not make images from words alone
    image_field: str = "image"  # the multipart field of each input image: "image" or "image[]"
    response_format: bool = True  # whether it takes ``response_format`` (OpenAI's gpt-image routes refuse it)
    tokens: TokenPrice | None = None
    options: ModelOptions = field(default_factory=ModelOptions)
    mask: bool = False  # takes a mask (a PNG whose transparent pixels mark where to edit)
    partial_images: tuple[int, int] | None = None  # streams, with this many partial images at least and at most
    timeout: float | None = None  # seconds for one call (None: IMAGE_API_TIMEOUT)
    timeout_large: float | None = None  # for a 4K image or many inputs (None: ``timeout``)
    fallback: str | None = None  # where new jobs go while this model fails fast (None: IMAGE_FALLBACK_MODEL)

    @property
    def wire(self) -> str:
        """The name the API knows this model by."""
        return self.wire_name or self.name

    def path(self, endpoint: str) -> str | None:
        """The path of ``endpoint`` ("edits" or "generations") below the API's base, or ``None`` without it."""
        path = self.edits_path if endpoint == "edits" else self.generations_path
        return path or None

    @property
    def streamed_partials(self) -> int:
        """How many partial images a live preview asks of this model: the most it streams (0: it does not)."""
        return self.partial_images[1] if self.partial_images is not None else 0

    def timeout_for(self, size: str | None, input_count: int, default: float) -> float:
        """Seconds one call may take: longer for a 4K image or many inputs, when the catalog says so."""
        base = self.timeout or default
        large = size is not None and max(_pixels_of(size)) > LARGE_SIDE
        if (large or input_count >= MANY_INPUTS) and self.timeout_large is not None:
            return self.timeout_large
        return base

    # Sizes and options ----------------------------------------------------------------------------

    def accepts(self, size: str | None, options: Mapping[str, str | int] | None = None, *, mask: bool = False) -> bool:
        """Whether this model takes ``size`` (``None`` is auto, which every model takes), ``options`` and, when
        ``mask``, a mask (a region edit)."""
        if size_problem(self.sizes, size) is not None or (mask and not self.mask):
            return False
        try:
            return dict(self.check_options(options or {})) == dict(options or {})
        except InputError:
            return False

    def check_size(self, size: str | None) -> None:
        """Refuse (``InputError``) a size this model does not take, saying what it does take."""
        problem = size_problem(self.sizes, size)
        if problem is not None:
            raise InputError(
                _t(
                    "`{size}` is not a size the image service supports for {model}: {problem}",
                    size=size,
                    model=self.name,
                    problem=problem,
                )
            )

    def check_region(self, region: Region | None) -> None:
        """Refuse (``InputError``) a region edit this model cannot make: it takes no mask, or nothing is marked."""
        if region is None:
            return
        if not self.mask:
            raise InputError(
                _t(
                    "{model} cannot repaint a region of an image (it takes no mask); ask an admin to pick a model "
                    "that can.",
                    model=self.name,
                )
            )
        region.check()

    def check_options(self, asked: Mapping[str, str | int]) -> dict[str, str | int]:
        """The options to send for what a member asked, in wire order; ``InputError`` for one this model lacks.

        A transparent background forces a format that keeps it: png (or webp) when none was asked.
        """
        checked: dict[str, str | int] = {}
        for name, value in asked.items():
            if name not in OPTION_NAMES:
                raise ValueError(f"{name} is not a model option")
            label = OPTION_LABELS[name]
            if not self.options.takes(name):
                raise InputError(
                    # Translators: {option} is an option's name (quality, format, background…), {model} a model's.
                    _t("{model} has no {option} option; leave {option} empty.", model=self.name, option=label)
                )
            if name == OUTPUT_COMPRESSION:
                low, high = self.options.output_compression or (0, 0)
                if not isinstance(value, int) or not low <= value <= high:
                    raise InputError(
                        _t("{option} must be a whole number from {low} to {high}.", option=label, low=low, high=high)
                    )
            elif value not in self.options.choices(name):
                raise InputError(
                    # Translators: {value} is what was asked; {values} lists what the model takes.
                    _t(
                        "`{value}` is not a {option} {model} takes; pick one of: {values}.",
                        value=str(value)[:40],
                        option=label,
                        model=self.name,
                        values=", ".join(self.options.choices(name)),
                    )
                )
            checked[name] = value
        fmt = checked.get(OUTPUT_FORMAT)
        if checked.get(BACKGROUND) == TRANSPARENT:
            if fmt is not None and fmt not in KEEPS_TRANSPARENCY:
                raise InputError(
                    _t(
                        "A transparent background needs the png or webp format; pick one of those, or leave "
                        "the format empty."
                    )
                )
            if fmt is None:
                checked[OUTPUT_FORMAT] = next(f for f in KEEPS_TRANSPARENCY if f in self.options.output_format)
        if OUTPUT_COMPRESSION in checked and checked.get(OUTPUT_FORMAT) not in COMPRESSES:
            raise InputError(
                _t("{option} applies only to the jpeg and webp formats.", option=OPTION_LABELS[OUTPUT_COMPRESSION])
            )
        return {name: checked[name] for name in OPTION_NAMES if name in checked}

    # Prices ---------------------------------------------------------------------------------------

    def reservation(
        self, prompt: str, input_count: int, size: str | None, options: Mapping[str, str | int], *, mask: bool = False
    ) -> int:
        """What a job is charged when it is accepted (micro-dollars): the flat price, or its most expensive
        outcome by tokens (settled to the real cost when its answer comes), its streamed partial images included.

        A region edit's ``mask`` is one more image sent. Whether the provider counts its tokens is not
        published, so it is reserved as an input image: a reservation never falls short of the real cost.
        """
        if self.tokens is None:
            return self.price
        input_count += 1 if mask else 0
        pixels = _area(size) if size is not None else self.sizes.largest_pixels()
        quality = options.get(QUALITY)
        partials = options.get(PARTIAL_IMAGES, 0)
        return self.tokens.reservation(
            prompt,
            input_count,
            pixels,
            quality if isinstance(quality, str) else None,
            partials if isinstance(partials, int) else 0,
        )

    def preview_cost(self) -> int:
        """What a live preview's partial images add at most to a job on this model (micro-dollars)."""
        return self.tokens.partials_cost(self.streamed_partials) if self.tokens is not None else 0

    def settle(self, reserved: int, usage: Usage | None, input_count: int) -> Settlement | None:
        """How a job charged ``reserved`` settles once its answer came: ``None`` for a flat price; the real cost
        from ``usage``; without ``usage``, at the reservation (the reason says so, for the log)."""
        if self.tokens is None:
            return None
        if usage is None:
            return Settlement(0, reserved, "the answer carried no usage; settled at the reservation")
        real = self.tokens.cost(usage, input_count)
        return Settlement(real - reserved, real, f"usage in={usage.input_tokens} out={usage.output_tokens}")

    def price_text(self) -> Text:
        """The price as admins read it: ``$0.03 an image``, or the token prices."""
        if self.tokens is None:
            # Translators: {price} is dollars, without the "$".
            return _t("${price} an image", price=format_price(self.price))
        return _t(
            # Translators: prices in dollars per million tokens (without the "$").
            "by tokens: ${text} text in, ${image} images in, ${output} image out per million",
            text=format_price(self.tokens.text_input),
            image=format_price(self.tokens.image_input),
            output=format_price(self.tokens.image_output),
        )


def _pixels_of(size: str) -> tuple[int, int]:
    try:
        return dimensions(size)
    except ValueError:
        return (0, 0)


def _area(size: str) -> int:
    width, height = _pixels_of(size)
    return width * height


def size_problem(rule: SizeRule, size: str | None) -> Text | None:
    """Why ``size`` breaks ``rule``, or ``None`` when it is fine."""
    if size is None:
        return None
    if rule is SizeRule.TABLE:
        try:
            normalize_size(size)
        except ValueError:
            return _t("pick one from the list (start typing, e.g. 2048 or 16:9), or leave size empty for auto.")
        return None
    try:
        width, height = dimensions(size)
    except ValueError:
        return _t("write it as WIDTHxHEIGHT, e.g. 2048x1152.")
    if width <= 0 or height <= 0:
        return _t("write it as WIDTHxHEIGHT, e.g. 2048x1152.")
    if rule is SizeRule.FREE:
        return None
    if width % SIDE_STEP or height % SIDE_STEP:
        return _t("both sides must be multiples of {step}.", step=SIDE_STEP)
    long, short = max(width, height), min(width, height)
    if long > MAX_RATIO * short:
        return _t("the long side may be at most 3 times the short one.")
    if long > MAX_SIDE or width * height > MAX_AREA:
        return _t("at most 3840 pixels on a side and 3840×2160 pixels in all.")
    return None


def offered_options(models: tuple[ImageModel, ...] | list[ImageModel]) -> dict[str, tuple[str, ...]]:
    """The text options (and their values) any of ``models`` takes: what the commands offer, in catalog order."""
    offered: dict[str, tuple[str, ...]] = {}
    for name in (QUALITY, OUTPUT_FORMAT, BACKGROUND):
        values: list[str] = []
        for model in models:
            values += [v for v in model.options.choices(name) if v not in values]
        if values:
            offered[name] = tuple(values)
    return offered


@dataclass(frozen=True)
class Shorthand:
    """One ``IMAGE_MODELS`` entry: a name, and the price and size rule it gives (``None``: not given)."""

    name: str
    price: int | None
    sizes: SizeRule | None


def parse_shorthand(text: str) -> tuple[Shorthand, ...]:
    """``IMAGE_MODELS`` (``name=price[:rule]``, comma-separated), in order; raise ``ValueError`` with what is wrong."""
    entries: list[Shorthand] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, _, rest = entry.partition("=")
        name = name.strip()
        price_text, _, rule_text = rest.partition(":")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"{entry!r} does not start with a model name")
        try:
            price = parse_usd(price_text) if price_text.strip() else None
        except MoneyError:
            raise ValueError(f"the price in {entry!r} is not an amount of dollars (at most 6 decimals)") from None
        try:
            rule = SizeRule(rule_text.strip()) if rule_text.strip() else None
        except ValueError:
            raise ValueError(f"the size rule in {entry!r} must be 'table', 'any' or 'free'") from None
        if any(e.name == name for e in entries):
            raise ValueError(f"{name} is listed twice")
        entries.append(Shorthand(name, price, rule))
    if not entries:
        raise ValueError("it lists no model")
    return tuple(entries)


def parse_models(text: str, default_price: int) -> tuple[ImageModel, ...]:
    """``IMAGE_MODELS`` alone (no catalog) as plain models at their prices, in order; ``ValueError`` if wrong."""
    return tuple(
        ImageModel(e.name, default_price if e.price is None else e.price, e.sizes or SizeRule.for_model(e.name))
        for e in parse_shorthand(text)
    )
