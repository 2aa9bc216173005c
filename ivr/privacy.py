"""Keep phone numbers and entered digits out of logs."""

from __future__ import annotations

import logging
import re

# Anything that looks like a phone number or a run of entered digits: 7+ characters of digits,
# optionally with a leading + and separators. Shorter numbers (menu keys, ports, PIDs, ticket
# references, line numbers), digits inside ids (CallSids are hex) and ISO dates stay readable.
_NUMBERISH = re.compile(r"(?<![\w.:/+-])(?!\d{4}-\d\d-\d\d)\+?\d[\d -]{5,}\d(?![\w:/]|\.\d)")


# What Twilio sends as From for a withheld caller ID: no one's number, and worth reading in a log.
WITHHELD = frozenset({"anonymous", "restricted", "unknown", "private", "unavailable", "blocked"})


def mask_number(number: str | None) -> str:
    """'+819012345678' -> '+81******5678'. Keeps enough to tell calls apart in a log."""
    if not number:
        return "-"
    if number.lower() in WITHHELD:
        return number
    digits = re.sub(r"\D", "", number)
    if len(digits) < 5:
        return "*" * len(number)
    head = "+" + digits[:2] if number.startswith("+") else ""
    return f"{head}{'*' * (len(digits) - len(head.lstrip('+')) - 4)}{digits[-4:]}"


def scrub(text: str) -> str:
    return _NUMBERISH.sub(lambda m: mask_number(m.group(0)), text)


class ScrubFilter(logging.Filter):
    """Masks number-like runs in every record that passes a handler, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set, so the traceback is printed scrubbed too.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_scrubbing() -> None:
    """Attach the filter to every root handler (idempotent); called by the app factory."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
    # twilio-python logs every REST request and response at INFO (11 lines, with the numbers
    # dialled): only its warnings, please.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
