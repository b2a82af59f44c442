"""The filter grammar every consumer shares: `NAME:OP[:VALUE]`.

    tag.category:eq:Math        noise.cleanlab.flag:is_true      contamination:eq:clean
    reward.proxy:gt:0.5         tag.language:in:en,de            label.task.category:is_null

NAME is any column of a dataset (n_chars, a meta field) or any signal; OP is one of OPS; VALUE is text
(numbers are read as numbers by numeric columns), comma-separated for `in`, `not_in` and `between`
(`between:100,500`, an empty side is open). The first `:OP` that is a known operator ends the name, so
names may hold dots and spaces; values may hold colons.
"""

from __future__ import annotations

import re
from typing import Any

from core.browse.samples import Filter
from core.errors import InputError

# The grammar's operators; between, not_in and not_contains are the browser's older spellings, kept.
OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "contains", "not_contains",
       "is_true", "is_false", "is_null", "not_null")
NO_VALUE = ("is_true", "is_false", "is_null", "not_null")
_LISTS = ("in", "not_in", "between")
_PATTERN = re.compile(r"^(?P<name>.+?):(?P<op>" + "|".join(sorted(OPS, key=len, reverse=True))
                      + r")(?::(?P<value>.*))?$", re.S)


def parse_filter(text: str) -> Filter:
    """`NAME:OP[:VALUE]` -> Filter; InputError naming what was expected otherwise."""
    match = _PATTERN.match(text or "")
    if not match:
        raise InputError(f"filter {text!r}: expected COL:OP[:VALUE] (COL a column or signal) with OP one of "
                         f"{', '.join(OPS)}, e.g. tag.category:eq:Math or n_chars:between:100,500")
    name, op, value = match.group("name"), match.group("op"), match.group("value")
    if op in NO_VALUE:
        if value:
            raise InputError(f"filter {text!r}: {op} takes no value")
        return Filter(name, op)
    if value is None or (value == "" and op not in ("eq", "ne", "contains", "not_contains")):
        raise InputError(f"filter {text!r}: {op} needs a value, e.g. {name}:{op}:VALUE")
    if op in _LISTS:
        parts = [p.strip() for p in value.split(",")]
        parsed: Any = [p if p else None for p in parts] if op == "between" else parts
        return Filter(name, op, parsed)
    return Filter(name, op, value)


def format_filter(flt: Filter) -> str:
    """The grammar's text for a Filter (round-trips through parse_filter)."""
    if flt.op in NO_VALUE:
        return f"{flt.column}:{flt.op}"
    value = flt.value
    if isinstance(value, (list, tuple)):
        value = ",".join("" if v is None else str(v) for v in value)
    return f"{flt.column}:{flt.op}:{value}"
