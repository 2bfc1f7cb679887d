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
