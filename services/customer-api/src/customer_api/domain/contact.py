"""Validation of customer contact points and profile values (plain Python, no framework)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email

CHANNELS = ("email", "sms", "line", "phone")
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


def normalise_email(value: str) -> str:
    """A syntactically valid address, domain lower-cased; no DNS lookup (it would make writes flaky)."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc


def normalise_phone(value: str) -> str:
    """Phone numbers must arrive in E.164 (+81…); we do not guess a country."""
    if not value.startswith("+"):
        raise ValueError("phone must be in E.164 form, e.g. +819012345678")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"phone is not a number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("phone is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value
