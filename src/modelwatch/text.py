"""Numbers for people: how verdict reasons, alert annotations and summaries print values and shares."""

from __future__ import annotations

import html
import math
from typing import Any


def fmt_value(x: Any) -> str:
    """A value for people: three significant digits, ``n/a`` for none or NaN, strings as they are."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    return f"{x:.3g}"


def fmt_pct(x: Any) -> str:
    """A share as a percentage, with enough digits to tell 0.4 % from 0 %; ``n/a`` for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.0%}" if x == 0 or x >= 0.1 else f"{x:.1%}" if x >= 0.001 else f"{x:.2%}"


def html_text(x: Any) -> str:
    """Any value as HTML text: escaped (quotes too, so it is safe in an attribute), ``""`` for none."""
    return html.escape("" if x is None else str(x), quote=True)


#: the longest text drawn on a chart (a title, a legend entry, an axis label); longer ones end in "…"
CHART_TEXT_LIMIT = 80


def chart_text(x: Any, limit: int = CHART_TEXT_LIMIT) -> str:
    """Any value as text matplotlib draws literally: one line, at most ``limit`` characters, ``$`` escaped.

    Matplotlib reads a text holding two ``$`` as mathtext and raises on what it cannot typeset (a model
    named ``$\\foo$`` or ``price_$1_to_$2``), and hides a legend entry whose label starts with ``_``: a
    name is data, so neither may happen.
    """
    text = " ".join(("" if x is None else str(x)).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def safe_name(text: str, limit: int = 64) -> str:
    """A name as one file or object name every store accepts, unique per name, at most ``limit`` + 17
    characters of ``[A-Za-z0-9._-]``.

    A plain name (letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit, at most ``limit``
    characters) is kept as it is, so the usual ``fraud-detector`` stays readable. Any other name becomes a
    readable prefix (the other characters as ``_``) and 16 hex digits of its SHA-256: a local file name
    stops at 255 bytes, and percent-encoding 28 CJK characters already makes 265.
    """
    import hashlib
    import re

    if re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{limit - 1}}}", text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[: limit - 17].rstrip("._-")
    return f"{readable}-{digest}" if readable else digest
