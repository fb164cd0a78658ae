"""Currencies and amounts: ISO 4217 codes, and amounts at the currency's precision."""

from __future__ import annotations

from decimal import Decimal
from functools import cache

from babel.numbers import get_currency_precision, list_currencies

_KNOWN = frozenset(list_currencies())


def check_currency(code: str) -> str:
    if code not in _KNOWN:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


def amount_problem(amount: Decimal, currency: str) -> str | None:
    """Why this amount cannot be in this currency (too many decimal places), or None."""
    digits = _precision(currency)
    exponent = amount.normalize().as_tuple().exponent
    decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if decimals > digits:
        return f"{currency} amounts have at most {digits} decimal place{'s' if digits != 1 else ''}"
    return None


@cache
def _precision(currency: str) -> int:
    # babel looks the figure up in its locale data each time; ingestion asks for every amount.
    return int(get_currency_precision(currency))
