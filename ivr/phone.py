"""Callback numbers: normalise what a caller typed (or their caller ID) to E.164 with
`phonenumbers`, refuse what cannot or should not be dialled, and say numbers back digit by digit."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# A callback is a real person's phone: never a premium-rate, shared-cost or pager number, nor a
# short code (phonenumbers calls those invalid), nor a number it cannot place at all.
DIALLABLE_TYPES = frozenset(
    {
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
    }
)


def callback_number(raw: str | None, region: str) -> str | None:
    """The E.164 form of a number we may call back, or None. `raw` is a caller ID (+8190…) or the
    digits a caller typed (09012345678, or 0081… / 81… with the country code)."""
    text = (raw or "").strip()
    if not text or len(text) > 20:
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    if phonenumbers.number_type(number) not in DIALLABLE_TYPES:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def may_take_texts(e164: str) -> bool:
    """Whether a text to this number can arrive: not to a landline (Twilio refuses those, 21614).
    Numbers phonenumbers cannot tell apart (FIXED_LINE_OR_MOBILE, as in the US) are tried."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return False
    return phonenumbers.number_type(number) != PhoneNumberType.FIXED_LINE


def last_digits(e164: str, n: int = 4) -> str:
    """The end of a number, read one digit at a time: '5 6 7 8'."""
    return " ".join(e164[-n:])


def spoken_number(e164: str, region: str) -> str:
    """The number as the caller would dial it from `region`, digit by digit, groups separated by
    a comma so the voice pauses: '0 9 0, 1 2 3 4, 5 6 7 8'."""
    number = phonenumbers.parse(e164, None)
    if phonenumbers.region_code_for_number(number) == region:
        shown = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    else:
        shown = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    groups = ["".join(c for c in part if c.isdigit()) for part in shown.replace("-", " ").split()]
    return ", ".join(" ".join(group) for group in groups if group)
