"""Counts spoken with their unit: "1 minute", "3 minutes".

A prompt writes a count as `{wait_min}` (the bare number: right for languages without plural
forms, 待ち時間{wait_min}分) or `{wait_min:minute|minutes}` (the number, a space, and the singular
for exactly 1, the plural otherwise). The config checker accepts the second form only on counts
(`ivr.menus.model`), so nothing else can reach str.format with a spec it would refuse.
"""

from __future__ import annotations

import re

_UNIT_SPEC = re.compile(r"^[^|{}]+\|[^|{}]+$")


def is_unit_spec(spec: str) -> bool:
    """`minute|minutes`: a singular and a plural, neither empty."""
    return bool(_UNIT_SPEC.match(spec))


class Count(int):
    """An int that, given a `singular|plural` format spec, says itself with the right form."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(int(self))
        singular, plural = spec.split("|", 1)
        return f"{int(self)} {singular if self == 1 else plural}"
