"""The image models an operator allows: each with its price and the sizes it accepts.

``IMAGE_MODELS`` lists them as ``name=price[:rule]`` entries separated by commas, e.g.
``gpt-image-2-vip=0.03,gpt-image-2-all=0.02``. The rule is ``table`` (the provider's
30 fixed sizes) or ``any`` (any width×height within the limits below); without one, a
name ending in ``-vip`` gets ``table`` and every other model ``any``. The provider
silently rewrites a size a model does not take, so sizes are checked here, per model,
before anything is charged or sent.

``any``: both sides a positive multiple of 16, the long side at most 3:1 of the short
one, the long side at most 3840 and the area at most 3840×2160 pixels (so 2880×2880,
which is in the table, passes too: every table size fits the ``any`` rule).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bot.core.money import MoneyError, parse_usd
from bot.core.sizes import dimensions, normalize_size
from bot.errors import InputError
from bot.i18n import Text, _t

MAX_SIDE = 3840
MAX_AREA = 3840 * 2160
MAX_RATIO = 3.0
SIDE_STEP = 16


class SizeRule(enum.StrEnum):
    """Which output sizes a model accepts."""

    TABLE = "table"  # the provider's 30 fixed sizes (gpt-image-2-vip)
    ANY = "any"  # any width×height within the limits in this module's docstring

    @classmethod
    def for_model(cls, name: str) -> SizeRule:
        """The rule a model gets when the operator names none."""
        return cls.TABLE if name.endswith("-vip") else cls.ANY


@dataclass(frozen=True)
class ImageModel:
    """One allowed model: what it is called on the wire, what a job with it costs, which sizes it takes."""

    name: str
    price: int  # micro-dollars a job on this model is charged
    sizes: SizeRule

    def accepts(self, size: str | None) -> bool:
        """Whether this model takes ``size`` (``None`` is auto, which every model takes)."""
        return size_problem(self.sizes, size) is None

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
    if width <= 0 or height <= 0 or width % SIDE_STEP or height % SIDE_STEP:
        return _t("both sides must be multiples of {step}.", step=SIDE_STEP)
    long, short = max(width, height), min(width, height)
    if long > MAX_RATIO * short:
        return _t("the long side may be at most 3 times the short one.")
    if long > MAX_SIDE or width * height > MAX_AREA:
        return _t("at most 3840 pixels on a side and 3840×2160 pixels in all.")
    return None


def parse_models(text: str, default_price: int) -> tuple[ImageModel, ...]:
    """``IMAGE_MODELS`` as models, in order; raise ``ValueError`` with what is wrong."""
    models: list[ImageModel] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, _, rest = entry.partition("=")
        name = name.strip()
        price_text, _, rule_text = rest.partition(":")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"{entry!r} does not start with a model name")
        try:
            price = parse_usd(price_text) if price_text.strip() else default_price
        except MoneyError:
            raise ValueError(f"the price in {entry!r} is not an amount of dollars (at most 6 decimals)") from None
        try:
            rule = SizeRule(rule_text.strip()) if rule_text.strip() else SizeRule.for_model(name)
        except ValueError:
            raise ValueError(f"the size rule in {entry!r} must be 'table' or 'any'") from None
        if any(m.name == name for m in models):
            raise ValueError(f"{name} is listed twice")
        models.append(ImageModel(name, price, rule))
    if not models:
        raise ValueError("it lists no model")
    return tuple(models)
