"""Money as integers: micro-dollars (1 USD = 1,000,000), from the configuration parser to every total.

No float ever holds an amount: prices are parsed from text with ``Decimal``, totals are sums
of integer rows, and amounts are shown by integer arithmetic. A micro-dollar is finer than any
price the provider quotes (per-token prices are fractions of a cent per thousand tokens).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000


class MoneyError(ValueError):
    """A text that is not an amount of dollars."""


def parse_usd(text: str) -> int:
    """``"0.03"`` -> 30000; refuse anything that is not a non-negative amount with at most 6 decimals."""
    try:
        value = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise MoneyError(f"{text!r} is not an amount of dollars") from None
    if not value.is_finite() or value < 0:
        raise MoneyError(f"{text!r} is not a non-negative amount of dollars")
    micros = value * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise MoneyError(f"{text!r} has more than 6 decimals (the smallest amount is $0.000001)")
    return int(micros)


def format_usd(micros: int, places: int = 2) -> str:
    """``30000`` -> ``"0.03"``: dollars with ``places`` decimals (half up), by integer arithmetic."""
    step = MICROS_PER_USD // 10**places
    rounded = int((Decimal(micros) / step).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    sign = "-" if rounded < 0 else ""
    whole, cents = divmod(abs(rounded), 10**places)
    return f"{sign}{whole}.{cents:0{places}d}" if places else f"{sign}{whole}"


def format_price(micros: int) -> str:
    """A price as short as it reads exactly: ``30000`` -> ``"0.03"``, ``12345`` -> ``"0.012345"``."""
    for places in (2, 3, 4, 5, 6):
        if micros % (MICROS_PER_USD // 10**places) == 0:
            return format_usd(micros, places)
    return format_usd(micros, 6)  # pragma: no cover - every integer has at most 6 decimals


def usd_float(micros: int) -> float:
    """An amount as a float, only where a float is the interface (a Prometheus sample, a chart's axis)."""
    return micros / MICROS_PER_USD
