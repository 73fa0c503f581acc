"""A small HTML template helper: every value is escaped unless it is already ``Markup``.

Templates are constant strings in our code, filled with ``str.format``; a value from a request,
a token or the store can never become markup, because ``render`` escapes whatever is not
``Markup`` (attribute quotes included).
"""

from __future__ import annotations

import html
from collections.abc import Iterable


class Markup(str):
    """Text that is HTML already (rendered by this module), inserted as it is."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """``value`` as HTML text: markup is kept, anything else escaped; None is empty."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def render(template: str, **values: object) -> Markup:
    """Fill a constant template's ``{name}`` fields with escaped values."""
    return Markup(template.format(**{name: escape(value) for name, value in values.items()}))


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """Escaped parts joined by a (constant, trusted) separator."""
    return Markup(separator.join(escape(part) for part in parts))


def attributes(**values: object) -> Markup:
    """`` name="value"`` pairs: True gives a bare attribute, False and None leave it out;
    a trailing ``_`` is dropped (``class_``) and ``_`` elsewhere becomes ``-`` (``aria_label``)."""
    parts = []
    for name, value in values.items():
        key = name.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {key}")
        else:
            parts.append(f' {key}="{escape(value)}"')
    return Markup("".join(parts))
