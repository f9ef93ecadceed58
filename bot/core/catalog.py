"""The model catalog: a TOML file per source, read once at start, refused in one line when it is wrong.

The bot ships one (``bot/core/models.toml``); an operator's own (``MODELS_FILE``) is read on top
of it: an entry with the name of a shipped one is merged key by key (a key given replaces the
shipped key; a table such as ``price`` or ``options`` is replaced whole), a new name adds a
model, and its ``default`` picks the default model. ``docs/operations.md`` describes every key.

Every mistake is one line naming the file, the model and the key, e.g.
``MODELS_FILE /etc/atelier/models.toml: model 'gpt-image-2': price.text_input: must be an amount of
dollars (at most 6 decimals), got 'five'``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.core.models import (
    BACKGROUNDS,
    FORMATS,
    KEEPS_TRANSPARENCY,
    TRANSPARENT,
    ImageModel,
    ModelOptions,
    Shorthand,
    SizeRule,
)
from bot.core.money import MoneyError, parse_usd
from bot.core.pricing import Tier, TokenPrice

SHIPPED = Path(__file__).with_name("models.toml")
IMAGE_FIELDS = ("image", "image[]")
_MODEL_KEYS = {
    "enabled", "wire_name", "edits", "generations", "image_field", "response_format", "sizes", "price", "options",
    "timeout", "timeout_large", "fallback",
}  # fmt: skip
_TOKEN_KEYS = {
    "text_input",
    "image_input",
    "image_output",
    "input_image_tokens",
    "partial_image_tokens",
    "output_tokens",
}
_OPTION_KEYS = {"quality", "output_format", "output_compression", "background", "mask", "partial_images"}


class CatalogError(ValueError):
    """A mistake in a catalog, in one line: the file, the model and the key."""


@dataclass(frozen=True)
class CatalogEntry:
    """A model as the catalogs describe it, whether it is enabled, and the file it was (last) given in."""

    model: ImageModel
    enabled: bool
    source: str


@dataclass(frozen=True)
class Catalog:
    """Every model the catalogs describe, in the order they first appear, and the default they name."""

    entries: tuple[CatalogEntry, ...]
    default: str | None
    default_source: str

    @property
    def models(self) -> tuple[ImageModel, ...]:
        return tuple(entry.model for entry in self.entries)

    def entry(self, name: str) -> CatalogEntry | None:
        return next((entry for entry in self.entries if entry.model.name == name), None)

    def enabled(self) -> tuple[ImageModel, ...]:
        return tuple(entry.model for entry in self.entries if entry.enabled)

    def shorthand(self, given: Shorthand, default_price: int) -> ImageModel:
        """An ``IMAGE_MODELS`` entry as a model: the catalog's, made flat at the price given, or a plain one."""
        entry = self.entry(given.name)
        if entry is None:
            price = default_price if given.price is None else given.price
            return ImageModel(given.name, price, given.sizes or SizeRule.for_model(given.name))
        model = entry.model
        if given.price is not None:
            model = dataclasses.replace(model, price=given.price, tokens=None)
        if given.sizes is not None:
            model = dataclasses.replace(model, sizes=given.sizes)
        return model

    def check_fallbacks(self, models: tuple[ImageModel, ...]) -> None:
        """Each model's ``fallback`` names another model in use; raise ``CatalogError`` for the first that does not."""
        names = {m.name for m in models}
        for model in models:
            if model.fallback is None:
                continue
            entry = self.entry(model.name)
            where = entry.source if entry is not None else "IMAGE_MODELS"
            if model.fallback == model.name:
                raise CatalogError(f"{where}: model {model.name!r}: fallback: names the model itself")
            if model.fallback not in names:
                raise CatalogError(
                    f"{where}: model {model.name!r}: fallback: {model.fallback!r} is not one of the models in use "
                    f"({', '.join(sorted(names))})"
                )


def load_catalog(path: Path | None, default_price: int) -> Catalog:
    """The shipped catalog, with the operator's ``path`` read on top of it; ``CatalogError`` if either is wrong.

    ``default_price`` (``PRICE_PER_IMAGE``) is the price of a model whose entry gives none.
    """
    shipped = f"the shipped catalog {SHIPPED}"
    layers = [(shipped, _read(SHIPPED, shipped))]
    if path is not None:
        source = f"MODELS_FILE {path}"
        layers.append((source, _read(path, source)))
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, dict[str, str]] = {}  # model -> key -> the file that gave it
    default, default_source = None, shipped
    for source, document in layers:
        unknown = sorted(set(document) - {"default", "models"})
        if unknown:
            raise CatalogError(f"{source}: {unknown[0]}: not a catalog key (expected default and [models.NAME])")
        if "default" in document:
            if not isinstance(document["default"], str) or not document["default"]:
                raise CatalogError(f"{source}: default: must be a model's name")
            default, default_source = document["default"], source
        models = document.get("models", {})
        if not isinstance(models, dict):
            raise CatalogError(f"{source}: models: must be tables, one per model ([models.NAME])")
        for name, table in models.items():
            if not isinstance(table, dict):
                raise CatalogError(f"{source}: model {name!r}: must be a table ([models.{name}])")
            merged.setdefault(name, {}).update(table)
            sources.setdefault(name, {}).update(dict.fromkeys(table, source))
            sources[name][""] = source  # where the model was last described
    entries = []
    for name, table in merged.items():
        keys = sources[name]
        entries.append(_entry(name, table, keys, default_price))
    catalog = Catalog(tuple(entries), default, default_source)
    if default is not None and catalog.entry(default) is None:
        raise CatalogError(f"{default_source}: default: {default!r} is not a model in the catalog")
    return catalog


def _read(path: Path, source: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{source}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{source}: is not UTF-8 text") from None
    try:
        # Decimal, not float: a price such as 0.03 is read exactly.
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: is not valid TOML: {exc}") from None


class _Entry:
    """Reads one model's table, naming the file, the model and the key in every refusal."""

    def __init__(self, name: str, table: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        self.name = name
        self.table = table
        self.sources = sources

    def fail(self, key: str, problem: str) -> CatalogError:
        source = self.sources.get(key.split(".")[0]) or self.sources[""]
        return CatalogError(f"{source}: model {self.name!r}: {key}: {problem}")

    def text(self, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be text, got {_shown(value)}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_shown(value)}")
        return value

    def seconds(self, key: str) -> float | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | Decimal) or value <= 0:
            raise self.fail(key, f"must be a number of seconds above 0, got {_shown(value)}")
        return float(value)

    def path(self, key: str, default: str, *, may_be_empty: bool) -> str:
        value = self.text(key, default)
        if value == "" and may_be_empty:
            return value
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise self.fail(key, f"must be a path below IMAGE_API_BASE starting with '/', got {value!r}")
        return value


def _entry(name: str, table: Mapping[str, Any], sources: Mapping[str, str], default_price: int) -> CatalogEntry:
    read = _Entry(name, table, sources)
    if not name or any(c.isspace() for c in name):
        raise read.fail("name", "a model's name must not be empty or hold spaces")
    unknown = sorted(set(table) - _MODEL_KEYS)
    if unknown:
        raise read.fail(unknown[0], f"not a model key (expected one of {', '.join(sorted(_MODEL_KEYS))})")
    try:
        sizes = SizeRule(read.text("sizes", SizeRule.for_model(name).value))
    except ValueError:
        raise read.fail("sizes", f"must be 'table', 'any' or 'free', got {table['sizes']!r}") from None
    wire_name = read.text("wire_name", name)
    if not wire_name or any(c.isspace() for c in wire_name):
        raise read.fail("wire_name", f"must be a model name without spaces, got {wire_name!r}")
    fallback = read.text("fallback", "") or None
    price, tokens = _price(read, table.get("price"), default_price)
    options, mask, partial_images = _options(read, table.get("options"))
    model = ImageModel(
        name=name,
        price=price,
        sizes=sizes,
        wire_name=wire_name,
        edits_path=read.path("edits", "/images/edits", may_be_empty=False),
        generations_path=read.path("generations", "/images/generations", may_be_empty=True),
        image_field=read.text("image_field", "image", IMAGE_FIELDS),
        response_format=read.flag("response_format", True),
        tokens=tokens,
        options=options,
        mask=mask,
        partial_images=partial_images,
        timeout=read.seconds("timeout"),
        timeout_large=read.seconds("timeout_large"),
        fallback=fallback,
    )
    return CatalogEntry(model, read.flag("enabled", True), sources.get("enabled") or sources[""])


def _price(read: _Entry, value: Any, default_price: int) -> tuple[int, TokenPrice | None]:
    """A flat price (``per_image``; none: ``PRICE_PER_IMAGE``), or prices by tokens."""
    if value is None:
        return default_price, None
    if not isinstance(value, dict):
        raise read.fail("price", "must be a table ([models.NAME.price])")
    if "per_image" in value:
        extra = sorted(set(value) - {"per_image"})
        if extra:
            raise read.fail(f"price.{extra[0]}", "a flat price (per_image) takes no token prices")
        return _dollars(read, "price.per_image", value["per_image"]), None
    unknown = sorted(set(value) - _TOKEN_KEYS)
    if unknown:
        raise read.fail(f"price.{unknown[0]}", "not a price key (expected per_image, or the token prices)")
    missing = sorted(k for k in _TOKEN_KEYS - {"partial_image_tokens"} if k not in value)
    if missing:
        raise read.fail(f"price.{missing[0]}", "missing: a price by tokens needs it (or give per_image instead)")
    output = value["output_tokens"]
    if not isinstance(output, dict) or not output:
        raise read.fail("price.output_tokens", "must be a table of qualities, each a list of [pixels, tokens]")
    tiers = {str(quality): _tiers(read, f"price.output_tokens.{quality}", row) for quality, row in output.items()}
    tokens = TokenPrice(
        text_input=_dollars(read, "price.text_input", value["text_input"]),
        image_input=_dollars(read, "price.image_input", value["image_input"]),
        image_output=_dollars(read, "price.image_output", value["image_output"]),
        input_image_tokens=_count(read, "price.input_image_tokens", value["input_image_tokens"]),
        output_tokens=tiers,
        partial_image_tokens=_count(read, "price.partial_image_tokens", value.get("partial_image_tokens", 0)),
    )
    return 0, tokens


def _tiers(read: _Entry, key: str, row: Any) -> tuple[Tier, ...]:
    shape = "must be a list of [most pixels, output tokens] pairs, smallest first, e.g. [[1048576, 4160]]"
    if not isinstance(row, list) or not row:
        raise read.fail(key, shape)
    tiers: list[Tier] = []
    for pair in row:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in pair)
        ):
            raise read.fail(key, f"{shape}; got {_shown(pair)}")
        if tiers and (pair[0] <= tiers[-1][0] or pair[1] < tiers[-1][1]):
            raise read.fail(key, "the pairs must grow: more pixels, at least as many tokens")
        tiers.append((pair[0], pair[1]))
    return tuple(tiers)


def _options(read: _Entry, value: Any) -> tuple[ModelOptions, bool, tuple[int, int] | None]:
    if value is None:
        return ModelOptions(), False, None
    if not isinstance(value, dict):
        raise read.fail("options", "must be a table ([models.NAME.options])")
    unknown = sorted(set(value) - _OPTION_KEYS)
    if unknown:
        raise read.fail(f"options.{unknown[0]}", f"not an option (expected one of {', '.join(sorted(_OPTION_KEYS))})")
    quality = _words(read, "options.quality", value.get("quality", []), None)
    formats = _words(read, "options.output_format", value.get("output_format", []), FORMATS)
    background = _words(read, "options.background", value.get("background", []), BACKGROUNDS)
    compression = _range(read, "options.output_compression", value.get("output_compression"), 0, 100)
    partials = _range(read, "options.partial_images", value.get("partial_images"), 0, 3)
    mask = value.get("mask", False)
    if not isinstance(mask, bool):
        raise read.fail("options.mask", f"must be true or false, got {_shown(mask)}")
    if TRANSPARENT in background and not any(f in formats for f in KEEPS_TRANSPARENCY):
        raise read.fail(
            "options.background", "a transparent background needs output_format with png or webp (it keeps it)"
        )
    if compression is not None and not formats:
        raise read.fail("options.output_compression", "needs output_format (it applies to jpeg and webp)")
    return ModelOptions(quality, formats, compression, background), mask, partials


def _words(read: _Entry, key: str, value: Any, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise read.fail(key, f'must be a list of values, e.g. ["low", "high"], got {_shown(value)}')
    for word in value:
        if allowed is not None and word not in allowed:
            raise read.fail(key, f"{word!r} is not one of {', '.join(repr(a) for a in allowed)}")
        if not word or len(word) > 32 or not all(c.isalnum() or c in "-_" for c in word):
            raise read.fail(key, f"{word!r} is not a value (letters, digits, - or _, at most 32)")
    if len(set(value)) != len(value):
        raise read.fail(key, "lists a value twice")
    return tuple(value)


def _range(read: _Entry, key: str, value: Any, lowest: int, highest: int) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in value)
        or not lowest <= value[0] <= value[1] <= highest
    ):
        raise read.fail(key, f"must be [lowest, highest] within {lowest}..{highest}, got {_shown(value)}")
    return value[0], value[1]


def _dollars(read: _Entry, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise read.fail(key, f"must be an amount of dollars, got {_shown(value)}")
    try:
        return parse_usd(str(value))
    except MoneyError:
        raise read.fail(key, f"must be an amount of dollars (at most 6 decimals), got {str(value)!r}") from None


def _count(read: _Entry, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise read.fail(key, f"must be a whole number of tokens, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A value as a refusal shows it: short, and one line."""
    text = repr(str(value) if isinstance(value, Decimal) else value)
    return text if len(text) <= 60 else text[:59] + "…"
