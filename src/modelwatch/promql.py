"""What a PromQL expression reads, and how to learn when its samples were really taken.

A ``query_range`` answer is evaluated on a step grid, not at scrape times: for up to 5 minutes after a
series' last real sample (``--query.lookback-delta``) Prometheus repeats a plain gauge's old value at every
step, and a ``rate(x[1m])`` goes on for about a minute. A host that stopped being scraped (a restarted
Prometheus, an agent or remote-write gap, backfilled history) therefore looks sampled when it was not.
So for every configured query modelwatch also learns, per instance and step, the newest real sample of
each series it reads, and the join trusts a value only that close to a prediction.

``timestamp(<vector selector>)`` answers exactly that (:func:`sample_time_promql`, kept as the reference
the tests compare against), but Prometheus 2.42 evaluates it 20-40x slower than the query itself (it
re-seeks every series at every step). modelwatch therefore asks for two cheap things per selector instead
(see :func:`modelwatch.extract.extract_resources`): the raw sample times (:func:`raw_samples_promql`, a
range vector read at one instant) and, on the query's grid, whether the selector has any live series per
instance (:func:`presence_promql`, which honours staleness markers and the server's lookback exactly like
``timestamp()`` does).

This is a small lexer, not a PromQL parser: it finds vector selectors (a metric name and/or a ``{...}``
matcher block not used as a function name, keyword or label list) and range durations ``[5m]``. Pure
Python, no imports beyond ``re``: it runs when the configuration is validated.
"""

from __future__ import annotations

import re
from datetime import timedelta

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|[0-9][0-9a-zA-Z_.]*|\.[0-9][0-9a-zA-Z_.]*)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
#: words followed by a parenthesised label list, not an expression
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
#: words that are operators or modifiers, never metric names
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
#: aggregation operators, which may be followed by ``by (...)`` before their parenthesised argument
_AGGREGATIONS = {
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "limitk", "limit_ratio",
}  # fmt: skip
#: label added to tell the per-selector answers apart inside one companion query
SELECTOR_LABEL = "modelwatch_selector"


class PromqlLexError(ValueError):
    """The expression cannot be read (an unclosed string, brace or bracket)."""


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise PromqlLexError(f"unclosed string starting at character {i} in {text!r}")


def _skip_group(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the ``close`` matching the ``open_`` at ``i`` (strings inside skipped)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            i = _skip_string(text, i)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromqlLexError(f"unclosed {open_!r} in {text!r}")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and (text[i].isspace() or text[i] == "#"):
        if text[i] == "#":  # a comment runs to the end of the line
            while i < len(text) and text[i] != "\n":
                i += 1
        else:
            i += 1
    return i


def parse_range(text: str) -> timedelta:
    """``5m``, ``1h30m`` or ``90s`` as a timedelta.

    :raises PromqlLexError: when ``text`` is not a PromQL duration.
    """
    text = text.strip()
    pos, seconds = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise PromqlLexError(f"{text!r} is not a PromQL duration")
    return timedelta(seconds=seconds)


def analyse(promql: str) -> tuple[list[str], timedelta]:
    """The distinct vector selectors of ``promql`` (as written, without range or modifiers, in order of
    appearance) and the longest range it reads (``[1m]`` of a ``rate``, a subquery's range; zero for an
    expression of plain gauges).

    :raises PromqlLexError: for an unclosed string, brace or bracket.
    """
    selectors: list[str] = []
    longest = timedelta(0)
    i, n = 0, len(promql)
    while i < n:
        i = _skip_space(promql, i)
        if i >= n:
            break
        c = promql[i]
        if c in "\"'`":
            i = _skip_string(promql, i)
        elif c == "[":
            end = _skip_group(promql, i, "[", "]")
            inner = promql[i + 1 : end - 1].split(":", 1)[0]
            if inner.strip():
                longest = max(longest, parse_range(inner))
            i = end
        elif c == "{":
            end = _skip_group(promql, i, "{", "}")
            selectors.append(promql[i:end])
            i = end
        elif (m := _NUMBER.match(promql, i)) and not c.isalpha():
            i = m.end()
        elif m := _IDENT.match(promql, i):
            word = m.group(0)
            j = _skip_space(promql, m.end())
            if word.lower() in _LABEL_LIST_KEYWORDS:
                i = _skip_group(promql, j, "(", ")") if j < n and promql[j] == "(" else j
            elif j < n and promql[j] == "(":
                i = j  # a function or aggregation: its arguments are read next
            elif word.lower() in _KEYWORDS or word.lower() in _AGGREGATIONS:
                i = m.end()
            else:
                end = _skip_group(promql, j, "{", "}") if j < n and promql[j] == "{" else m.end()
                selectors.append(word + promql[j:end] if end > m.end() else word)
                i = end
        else:
            i += 1
    return list(dict.fromkeys(selectors)), longest


def sample_time_promql(promql: str, instance_label: str = "instance") -> str | None:
    """A query answering, per ``instance_label``, the newest real sample behind ``promql``'s value at
    each step (Unix seconds); ``None`` when the expression reads no series (e.g. ``vector(1)``).

    The reference definition of ``sample_time``; too slow on Prometheus 2.42 for daily use (see the
    module docstring), so extraction computes the same answer from :func:`presence_promql` and
    :func:`raw_samples_promql`.

    With several selectors the answer is the oldest of their newest samples: the value is only as fresh
    as its stalest input. A selector with no series at all (an error counter before the first error)
    constrains nothing.
    """
    selectors, _ = analyse(promql)
    if not selectors:
        return None
    per = [f"max by ({instance_label}) (timestamp({s}))" for s in selectors]
    if len(per) == 1:
        return per[0]
    tagged = " or ".join(f'label_replace({q}, "{SELECTOR_LABEL}", "{k}", "", "")' for k, q in enumerate(per))
    return f"min by ({instance_label}) ({tagged})"


def longest_range(promql: str) -> timedelta:
    """The longest range ``promql`` reads (zero for plain gauges); see :func:`analyse`."""
    return analyse(promql)[1]


def presence_promql(selector: str, instance_label: str = "instance") -> str:
    """A query answering, per ``instance_label`` at each step where ``selector`` has a live series (a real
    sample within the lookback that is not followed by a staleness marker: what ``timestamp()`` of the
    selector answers for), how many live series it has. Cheap: it runs on Prometheus's fast vector-selector
    path."""
    return f"count by ({instance_label}) ({selector})"


def raw_samples_promql(selector: str, range_ms: int) -> str:
    """A range vector of ``selector`` over ``range_ms`` milliseconds: evaluated as an instant query at
    time ``t`` it answers every real sample of every series in ``[t - range, t]`` (Prometheus 2.x; 3.x
    leaves the start out) at its scrape time. Staleness markers are never part of it.

    :raises ValueError: for a range under one millisecond (Prometheus refuses it).
    """
    if range_ms < 1:
        raise ValueError(f"a range vector needs a positive range, got {range_ms} ms")
    duration = f"{range_ms // 1000}s" if range_ms % 1000 == 0 else f"{range_ms}ms"
    return f"{selector}[{duration}]"
