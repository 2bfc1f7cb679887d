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

:func:`analyse` is a small lexer, not a PromQL parser: it finds vector selectors (a metric name and/or a
``{...}`` matcher block not used as a function name, keyword or label list) and range durations ``[5m]``.

:func:`check` and :func:`check_range_query` are the parser: a tokenizer and a recursive-descent parser
after Prometheus 2.42's own (structure, modifiers, function and aggregation signatures, value types, RE2
regex syntax), so a query Prometheus would refuse fails when the configuration is validated, naming the
position and what was expected, not at the first task try. Its verdict is promtool's on a corpus
(tests/unit/test_promql_lexer.py); functions of newer releases pass, the server being their judge.

Pure Python, no imports beyond ``re`` and ``warnings``, and the checker compiles nothing at import: it runs
at every DAG parse.
"""

from __future__ import annotations

import re
import warnings
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


def prometheus_duration(d: timedelta) -> str:
    """``d`` in Prometheus' duration syntax, in its largest exact unit (``5m``, ``90s``, ``1h``, ``250ms``)."""
    ms = round(d.total_seconds() * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


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


def presence_promql(selector: str, instance_label: str | tuple[str, ...] = "instance") -> str:
    """A query answering, per ``instance_label`` at each step where ``selector`` has a live series (a real
    sample within the lookback that is not followed by a staleness marker: what ``timestamp()`` of the
    selector answers for), how many live series it has; ``instance_label`` may be several labels (a
    serving preset's ``server, server_replica``). Cheap: it runs on Prometheus's fast vector-selector
    path."""
    labels = instance_label if isinstance(instance_label, str) else ", ".join(instance_label)
    return f"count by ({labels}) ({selector})"


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


# -- does Prometheus accept it: a tokenizer and a recursive-descent parser ------------------------------------
#
# What follows mirrors Prometheus 2.42's lexer (promql/parser/lex.go), grammar (generated_parser.y) and type
# checks (parse.go checkAST), so a query Prometheus would refuse with 400 bad_data fails when the
# configuration is validated, naming the position, instead of failing the task hours later. It builds no tree:
# each step returns the little a caller needs (the value type, whether it is a bare selector, its modifiers).
# Functions and aggregations of newer releases (3.x) are accepted: their server knows them.

#: Prometheus's documented value types
SCALAR, VECTOR, MATRIX, STRING = "scalar", "instant vector", "range vector", "string"

#: function -> (argument types, variadic, result): variadic 0 takes exactly the arguments, n > 0 up to n of the
#: last ones may be left out, -1 repeats the last one (Prometheus's ``Function.Variadic``)
_FUNCTIONS: dict[str, tuple[tuple[str, ...], int, str]] = {
    **{f: ((VECTOR,), 0, VECTOR) for f in (
        "abs", "absent", "acos", "acosh", "asin", "asinh", "atan", "atanh", "ceil", "cos", "cosh", "deg", "exp",
        "floor", "histogram_avg", "histogram_count", "histogram_stddev", "histogram_stdvar", "histogram_sum", "ln",
        "log10", "log2", "rad", "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "tan", "tanh", "timestamp")},
    **{f: ((MATRIX,), 0, VECTOR) for f in (
        "absent_over_time", "avg_over_time", "changes", "count_over_time", "delta", "deriv", "first_over_time",
        "idelta", "increase", "irate", "last_over_time", "mad_over_time", "max_over_time", "min_over_time",
        "present_over_time", "rate", "resets", "stddev_over_time", "stdvar_over_time", "sum_over_time",
        "ts_of_first_over_time", "ts_of_last_over_time", "ts_of_max_over_time", "ts_of_min_over_time")},
    **{f: ((VECTOR,), 1, VECTOR) for f in (
        "day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year")},
    "clamp": ((VECTOR, SCALAR, SCALAR), 0, VECTOR),
    "clamp_max": ((VECTOR, SCALAR), 0, VECTOR),
    "clamp_min": ((VECTOR, SCALAR), 0, VECTOR),
    "double_exponential_smoothing": ((MATRIX, SCALAR, SCALAR), 0, VECTOR),
    "holt_winters": ((MATRIX, SCALAR, SCALAR), 0, VECTOR),
    "histogram_fraction": ((SCALAR, SCALAR, VECTOR), 0, VECTOR),
    "histogram_quantile": ((SCALAR, VECTOR), 0, VECTOR),
    "info": ((VECTOR, VECTOR), 1, VECTOR),
    "label_join": ((VECTOR, STRING, STRING, STRING), -1, VECTOR),
    "label_replace": ((VECTOR, STRING, STRING, STRING, STRING), 0, VECTOR),
    "pi": ((), 0, SCALAR),
    "predict_linear": ((MATRIX, SCALAR), 0, VECTOR),
    "quantile_over_time": ((SCALAR, MATRIX), 0, VECTOR),
    "round": ((VECTOR, SCALAR), 1, VECTOR),
    "scalar": ((VECTOR,), 0, SCALAR),
    "sort_by_label": ((VECTOR, STRING), -1, VECTOR),
    "sort_by_label_desc": ((VECTOR, STRING), -1, VECTOR),
    "time": ((), 0, SCALAR),
    "vector": ((SCALAR,), 0, VECTOR),
}  # fmt: skip
#: aggregation -> the type of its parameter (None: it takes none)
_AGGREGATION_PARAM: dict[str, str | None] = {
    **dict.fromkeys(("sum", "avg", "count", "min", "max", "group", "stddev", "stdvar"), None),
    **dict.fromkeys(("topk", "bottomk", "quantile", "limitk", "limit_ratio"), SCALAR),
    "count_values": STRING,
}
#: words the lexer turns into keywords, whatever their case (``inf`` and ``nan`` are numbers)
_KEYWORD_TOKENS = {
    "and", "or", "unless", "atan2", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "start", "end", "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values",
}  # fmt: skip
#: keywords that may still name a metric where an expression starts (``sum{job="x"}``, a metric called ``by``)
_METRIC_KEYWORDS = _KEYWORD_TOKENS - {"atan2", "on", "ignoring", "group_left", "group_right", "bool"}
#: binary operator -> precedence (higher binds tighter); ``^`` is the only right-associative one
_PRECEDENCE = {
    "or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6,
}  # fmt: skip
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
_SET_OPERATORS = {"and", "or", "unless"}
#: a PromQL duration: each unit at most once, largest first (``1h30m``, not ``30m1h`` nor ``1.5h``)
_DURATION_TEXT = r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
_DURATION_NS = (31_536_000 * 10**9, 604_800 * 10**9, 86_400 * 10**9, 3_600 * 10**9, 60 * 10**9, 10**9, 10**6)
_HEX = r"0[xX][0-9a-fA-F]+"
_SPACE = " \t\n\r"
#: Go's string escapes (strconv): the character -> how many hex or octal digits follow it, and their base
_ESCAPE_DIGITS = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}
_DIGITS = {8: "01234567", 16: "0123456789abcdefABCDEF"}
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
#: RE2 (Go's regexp) refuses these Perl/PCRE constructs that Python's ``re`` accepts
_PCRE_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?>", "(?P=", "(?P>", "(?R", "(?|", "(?#", "(?(")
_POSIX_CLASSES = {"alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
                  "upper", "word", "xdigit"}  # fmt: skip
#: Python regex errors that RE2 raises as well (others, such as ``\pL``, are Python's gaps, not the query's)
_SHARED_REGEX_ERRORS = ("missing ), unterminated subpattern", "unbalanced parenthesis", "nothing to repeat",
                        "multiple repeat", "unterminated character set", "bad character range",
                        "min repeat greater than max repeat", "bad escape (end of pattern)")  # fmt: skip
#: what :meth:`_Parser.expect` says it wanted
_EXPECTED = {"duration": "a duration such as 5m", "number": "a number", "ident": "a label name"}
#: RE2's ``\z`` (end of text), which Python spells ``\Z``
_ESCAPED_Z = r"(?<!\\)((?:\\\\)*)\\z"
#: string arguments that must be label names: function -> argument indexes
_LABEL_ARGUMENTS = {"label_replace": (1,), "label_join": (1,)}
#: a Prometheus label name (``model.LabelNameRE``). The patterns here stay text until first use (``re`` caches
#: them): this module is imported at every DAG parse.
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_REPEAT = r"\{(\d+)(?:,(\d*))?\}"
#: nesting deeper than this is refused before Python's own recursion limit is reached
MAX_DEPTH = 100


def is_label_name(name: str) -> bool:
    """Whether Prometheus accepts ``name`` as a label name (``pod-name`` and ``2xx`` it does not)."""
    return re.fullmatch(LABEL_NAME, name) is not None


def _a(value_type: str) -> str:
    """``an instant vector``, ``a scalar``: a value type with its article, for messages."""
    return f"an {value_type}" if value_type[0] in "aeiou" else f"a {value_type}"


class PromqlSyntaxError(PromqlLexError):
    """Prometheus would refuse the expression. ``position`` is the 0-based character offset of the problem,
    ``problem`` says what was found and what was expected there."""

    def __init__(self, problem: str, position: int, text: str) -> None:
        self.problem, self.position, self._text = problem, position, text
        super().__init__(f"{_where(text, position)}: {problem}")

    def __reduce__(self) -> tuple[type[PromqlSyntaxError], tuple[str, int, str]]:  # pickles as it was built
        return type(self), (self.problem, self.position, self._text)


def _where(text: str, position: int) -> str:
    """``at character 19 (near '[5m])')``, or with a line and column when the expression spans lines."""
    if "\n" in text:
        line = text.count("\n", 0, position) + 1
        at = f"at line {line}, column {position - (text.rfind(chr(10), 0, position) + 1) + 1}"
    else:
        at = f"at character {position + 1}"
    near = text[position : position + 24]
    return f"{at} (near {near!r})" if near.strip() else f"{at} (the end)"


class _Token:
    """One lexeme: ``kind`` is a punctuation or operator itself, or number, duration, string, ident (a plain
    identifier), metric (one with a colon), keyword, match (a label matcher operator) or eof."""

    __slots__ = ("kind", "pos", "text", "value")

    def __init__(self, kind: str, text: str, pos: int, value: str = "") -> None:
        self.kind, self.text, self.pos, self.value = kind, text, pos, value

    def __repr__(self) -> str:  # what error messages call it
        if self.kind == "eof":
            return "end of input"
        if self.kind in ("number", "duration", "string", "keyword"):
            return f"{self.kind} {self.text[:40]!r}"
        if self.kind in ("ident", "metric"):
            return f"identifier {self.text[:40]!r}"
        return repr(self.text)


def _is_alnum(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _word_end(text: str, i: int) -> int:
    """Past the letters, digits and dots from ``i``: the rest of a malformed number, for its message."""
    while i < len(text) and (_is_alnum(text[i]) or text[i] == "."):
        i += 1
    return i


def _scan_number(text: str, i: int) -> tuple[int, bool]:
    """Where Prometheus's ``scanNumber`` stops reading at ``i``, and whether what it read is a whole number
    (not followed by a letter or digit, which makes it the start of a duration)."""
    digits = "0123456789"
    if text.startswith(("0x", "0X"), i):
        i, digits = i + 2, "0123456789abcdefABCDEF"
    while i < len(text) and text[i] in digits:
        i += 1
    if i < len(text) and text[i] == ".":
        i += 1
        while i < len(text) and text[i] in digits:
            i += 1
    if i < len(text) and text[i] in "eE":
        i += 1
        if i < len(text) and text[i] in "+-":
            i += 1
        while i < len(text) and text[i].isdigit() and text[i].isascii():
            i += 1
    return i, not (i < len(text) and _is_alnum(text[i]))


def _scan_duration_units(text: str, i: int) -> int | None:
    """Past the units of a duration whose first number ends at ``i`` (``acceptRemainingDuration``); None when
    what follows is no duration."""
    if i >= len(text) or text[i] not in "smhdwy":
        return None
    i += 1
    if i < len(text) and text[i] == "s":
        i += 1
    while i < len(text) and text[i] in "0123456789":
        while i < len(text) and text[i] in "0123456789":
            i += 1
        if i >= len(text) or text[i] not in "smhdw":
            return None
        i += 1
        if i < len(text) and text[i] == "s":
            i += 1
    return None if i < len(text) and _is_alnum(text[i]) else i


def _scan_string(text: str, i: int) -> tuple[int, str]:
    """Past the string literal opening at ``i``, and its value (Go's escapes; none in a backtick string)."""
    quote, start, out = text[i], i, []
    i += 1
    while True:
        if i >= len(text) or (text[i] == "\n" and quote != "`"):
            raise PromqlSyntaxError("unterminated string", start, text)
        c = text[i]
        if c == quote:
            return i + 1, "".join(out)
        if c != "\\" or quote == "`":
            out.append(c)
            i += 1
            continue
        e = text[i + 1 : i + 2]
        if e in _SIMPLE_ESCAPES or e == quote:
            out.append(_SIMPLE_ESCAPES.get(e, e))
            i += 2
            continue
        count, base = _ESCAPE_DIGITS.get(e, (3, 8) if e in "01234567" and e else (0, 0))
        if not count:
            raise PromqlSyntaxError(f"unknown escape sequence {chr(92) + e!r} in a string", i, text)
        first = i + 1 if base == 8 else i + 2
        digits = text[first : first + count]
        if len(digits) < count or any(d not in _DIGITS[base] for d in digits):
            raise PromqlSyntaxError(f"escape sequence {text[i : first + count]!r} needs {count} digits of base {base}",
                                    i, text)  # fmt: skip
        code = int(digits, base)
        if code > (255 if e in "x01234567" else 0x10FFFF) or 0xD800 <= code < 0xE000:
            raise PromqlSyntaxError(f"escape {text[i : first + count]!r} is not a valid character", i, text)
        out.append(chr(code))
        i = first + count


def _tokens(text: str) -> list[_Token]:
    """The lexemes of ``text``, as Prometheus's lexer splits them (context matters: inside ``{...}`` words are
    label names, inside ``[...]`` only durations and one colon are allowed).

    :raises PromqlSyntaxError: for a character or number Prometheus cannot read, an unterminated string, or an
        unbalanced parenthesis, brace or bracket.
    """
    out: list[_Token] = []
    i, n = 0, len(text)
    paren_depth, brace_open, bracket_open, got_colon = 0, -1, -1, False
    opened: list[int] = []  # positions of the open parentheses
    while True:
        while i < n and (text[i] in _SPACE or text[i] == "#"):
            if text[i] == "#":
                while i < n and text[i] != "\n":
                    i += 1
            else:
                i += 1
        if i >= n:
            if brace_open >= 0:
                raise PromqlSyntaxError("unclosed '{': expected '}'", brace_open, text)
            if bracket_open >= 0:
                raise PromqlSyntaxError("unclosed '[': expected ']'", bracket_open, text)
            if paren_depth:
                raise PromqlSyntaxError("unclosed '(': expected ')'", opened[-1], text)
            out.append(_Token("eof", "", n))
            return out
        c, start = text[i], i
        if brace_open >= 0:  # label matchers: name, operator, string, comma
            if _is_alnum(c) and not c.isdigit():
                while i < n and _is_alnum(text[i]):
                    i += 1
                out.append(_Token("ident", text[start:i], start))
            elif c in "\"'`":
                i, value = _scan_string(text, i)
                out.append(_Token("string", text[start:i], start, value))
            elif text.startswith(("=~", "!~", "!="), i):
                out.append(_Token("match", text[i : i + 2], start))
                i += 2
            elif c == "=":
                out.append(_Token("match", "=", start))
                i += 1
            elif c in ",}":
                out.append(_Token(c, c, start))
                i += 1
                if c == "}":
                    brace_open = -1
            else:
                what = "'{' (a selector cannot nest)" if c == "{" else repr(c)
                raise PromqlSyntaxError(f"unexpected {what} inside braces: expected a label matcher such as "
                                        "name=\"value\", ',' or '}'", i, text)  # fmt: skip
            continue
        if bracket_open >= 0 and (c.isdigit() or c == "." or _is_alnum(c)) and out[-1].kind == "[":
            end, whole = _scan_number(text, i)
            units = None if whole else _scan_duration_units(text, end)
            if units is None:
                word = text[i : _word_end(text, max(end, i + 1))]
                problem = "needs a unit" if whole else "is not a duration"
                raise PromqlSyntaxError(f"{word!r} inside '[' {problem} (e.g. 5m or 1h30m; units ms, s, m, h, d, w, "
                                        "y)", i, text)  # fmt: skip
            out.append(_Token("duration", text[i:units], start))
            i = units
            continue
        if c.isdigit() or (c == "." and text[i + 1 : i + 2].isdigit()):
            end, whole = _scan_number(text, i)
            if whole:
                out.append(_Token("number", text[i:end], start))
                i = end
                continue
            units = _scan_duration_units(text, end)
            if units is None:
                raise PromqlSyntaxError(f"{text[i : _word_end(text, end)]!r} is neither a number nor a duration "
                                        "(units ms, s, m, h, d, w, y)", i, text)  # fmt: skip
            out.append(_Token("duration", text[i:units], start))
            i = units
            continue
        if _is_alnum(c) or c == ":":
            if bracket_open >= 0:
                if c != ":" or got_colon:
                    raise PromqlSyntaxError(f"unexpected {c!r} inside '[...]': expected a duration, ':' or ']'", i,
                                            text)  # fmt: skip
                got_colon = True
                out.append(_Token(":", ":", start))
                i += 1
                continue
            while i < n and (_is_alnum(text[i]) or text[i] == ":"):
                i += 1
            word = text[start:i]
            low = word.lower()
            if low in ("inf", "nan"):
                out.append(_Token("number", word, start))
            elif low in _KEYWORD_TOKENS:
                out.append(_Token("keyword", word, start, low))
            else:
                out.append(_Token("metric" if ":" in word else "ident", word, start))
            continue
        if c in "\"'`":
            i, value = _scan_string(text, i)
            out.append(_Token("string", text[start:i], start, value))
            continue
        two = text[i : i + 2]
        if two in ("==", "!=", "<=", ">="):
            out.append(_Token("op", two, start))
            i += 2
            continue
        if c in "+-*/%^<>":
            out.append(_Token("op", c, start))
        elif c == "(":
            paren_depth += 1
            opened.append(i)
            out.append(_Token(c, c, start))
        elif c == ")":
            if not paren_depth:
                raise PromqlSyntaxError("unexpected ')': no '(' is open", i, text)
            paren_depth -= 1
            opened.pop()
            out.append(_Token(c, c, start))
        elif c == "{":
            brace_open = i
            out.append(_Token(c, c, start))
        elif c == "[":
            if bracket_open >= 0:
                raise PromqlSyntaxError("unexpected '[' inside '[...]'", i, text)
            bracket_open, got_colon = i, False
            out.append(_Token(c, c, start))
        elif c == "]":
            if bracket_open < 0:
                raise PromqlSyntaxError("unexpected ']': no '[' is open", i, text)
            bracket_open = -1
            out.append(_Token(c, c, start))
        elif c in ",@" or (c == "=" and text[i + 1 : i + 2] != "~"):
            out.append(_Token(c, c, start))
        else:
            hint = " (=~ and !~ belong inside a selector's braces)" if two in ("=~", "!~") else ""
            raise PromqlSyntaxError(f"unexpected character {c!r}{hint}", i, text)
        i += 1


def _duration_ns(token: _Token, text: str) -> int:
    """The duration ``token`` stands for, in nanoseconds (Prometheus's ``model.ParseDuration``)."""
    m = re.fullmatch(_DURATION_TEXT, token.text)
    if not m or not token.text:
        raise PromqlSyntaxError(f"{token.text!r} is not a valid duration (e.g. 5m, 1h30m: whole numbers, units "
                                "largest first, each once)", token.pos, text)  # fmt: skip
    ns = sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_NS, strict=True) if g)
    if ns == 0:
        raise PromqlSyntaxError(f"duration {token.text!r} must be greater than 0", token.pos, text)
    if ns > 2**63 - 1:
        raise PromqlSyntaxError(f"duration {token.text!r} is out of range (at most 292y)", token.pos, text)
    return ns


def _number(token: _Token, text: str) -> float:
    """The value of a number token, refused as Go's ``strconv`` refuses it (``1e``, ``1e400``)."""
    if token.text.lower() in ("inf", "nan"):
        return float(token.text.lower())
    if re.fullmatch(_HEX, token.text):
        return float(int(token.text, 16))
    try:
        value = float(token.text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise PromqlSyntaxError(f"{token.text!r} is not a number Prometheus can read", token.pos, text)
    return value


def regex_problem(pattern: str) -> str | None:
    """Why RE2 (Go's regexp, which Prometheus uses) refuses ``pattern``, or None when it may well accept it.

    Python's ``re`` judges the shared syntax (parentheses, sets, repetition); the Perl extensions RE2 lacks
    (lookaround, backreferences, possessive repetition) and RE2's limits are checked by hand. Where only
    Python fails (``\\pL``), the pattern is given the benefit of the doubt.
    """
    i, n, in_class, after_repeat, depth, deepest = 0, len(pattern), False, False, 0, 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern.startswith("\\Q", i):  # literal text up to \E
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            if not in_class and (d := pattern[i + 1 : i + 2]) and d in "123456789":
                return f"backreference {pattern[i : i + 2]!r} (RE2 has no backreferences)"
            i, after_repeat = i + 2, False
            continue
        if in_class:
            if pattern.startswith("[:", i) and (end := pattern.find(":]", i + 2)) > 0:
                if pattern[i + 2 : end].lstrip("^") not in _POSIX_CLASSES:
                    return f"unknown character class {pattern[i : end + 2]!r}"
                i = end + 2
                continue
            in_class = c != "]"
            i += 1
            continue
        if c == "[":
            i += 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)  # a leading ] is a literal
            in_class, after_repeat = True, False
            continue
        if c == "(" and (group := next((g for g in _PCRE_GROUPS if pattern.startswith(g, i)), None)):
            return f"{group!r} (lookaround, atomic groups and the like are Perl syntax RE2 does not support)"
        if c == "{" and (m := re.compile(_REPEAT).match(pattern, i)):
            if any(g and int(g) > 1000 for g in m.groups()):
                return f"repeat count {m.group(0)!r} above RE2's 1000"
            i, after_repeat = m.end(), True
            continue
        if c == "+" and after_repeat:
            return f"possessive or nested repetition {pattern[i - 1 : i + 1]!r} (RE2 does not support it)"
        after_repeat = c in "*+?" and not (c == "?" and pattern[i - 1 : i] == "(")
        depth += (c == "(") - (c == ")")
        deepest = max(deepest, depth)
        i += 1
    if in_class:
        return "missing closing ] of a character class"
    if deepest > 998:  # with the ^(?:...)$ Prometheus wraps it in, RE2 refuses 1000 levels
        return f"groups nested {deepest} deep (RE2's limit is about 1000)"
    if deepest > 100:  # RE2 takes it; Python's re would run out of stack judging the rest
        return None
    try:
        _python_regex(pattern)
    except (RecursionError, OverflowError):
        return None
    except re.error as exc:
        if exc.msg.startswith(_SHARED_REGEX_ERRORS):
            return exc.msg
        if exc.msg.startswith("bad escape \\") and exc.msg[12:13].isalpha() and exc.msg[12:13] not in "pPzQE":
            return f"{exc.msg} (not an escape RE2 knows)"
    return None


def _python_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled by Python's ``re``, RE2's ``\\z`` spelt ``\\Z``.

    :raises re.error: RecursionError or OverflowError where Python's ``re`` cannot read it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible nested set" for [[:alpha:]], valid in RE2
        return re.compile(re.sub(_ESCAPED_Z, r"\1\\Z", pattern))


def _matches_empty(op: str, value: str) -> bool:
    """Whether a label matcher matches the empty value (a label that is absent): such a matcher alone would
    select every series of every metric, which Prometheus refuses. Unknown to Python's ``re``: assume not."""
    if op in ("=", "!="):
        return (value == "") == (op == "=")
    if value.count("(") > 100:
        return False
    try:
        hit = _python_regex(value).fullmatch("") is not None
    except (re.error, RecursionError, OverflowError):
        return False
    return hit == (op == "=~")


class _Expr:
    """What the parser keeps of a subexpression: its value type, what it is (``selector`` a bare vector
    selector, ``matrix`` a range selector, ``subquery``, or ``other``), and the modifiers it already has."""

    __slots__ = ("at", "kind", "offset", "pos", "type", "value")

    def __init__(self, type_: str, pos: int, kind: str = "other", value: str | None = None) -> None:
        self.type, self.pos, self.kind, self.offset, self.at = type_, pos, kind, False, False
        #: a string literal's value (label names and regexes that functions check when they run)
        self.value = value


class _Parser:
    """Recursive descent over :func:`_tokens` with precedence climbing for the binary operators."""

    def __init__(self, text: str) -> None:
        self.text, self.toks, self.i, self.depth = text, _tokens(text), 0, 0
        #: what the parser accepts but evaluation refuses (a bad label name or regex in a string argument)
        self.at_run_time: list[PromqlSyntaxError] = []

    # -- helpers
    @property
    def tok(self) -> _Token:
        return self.toks[self.i]

    def next(self) -> _Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, problem: str, pos: int | None = None) -> PromqlSyntaxError:
        return PromqlSyntaxError(problem, self.tok.pos if pos is None else pos, self.text)

    def expect(self, kind: str, where: str) -> _Token:
        if self.tok.kind != kind:
            raise self.fail(f"unexpected {self.tok!r} {where}, expected {_EXPECTED.get(kind, repr(kind))}")
        return self.next()

    def is_keyword(self, *words: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.value in words

    # -- the grammar
    def parse(self) -> str:
        if self.tok.kind == "eof":
            raise self.fail("no expression found (the query is empty or only a comment)")
        expr = self.expr(0)
        if self.tok.kind != "eof":
            raise self.fail(
                f"unexpected {self.tok!r} after a whole expression, expected an operator or the end"
            )
        return expr.type

    def expr(self, min_prec: int) -> _Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"the expression nests more than {MAX_DEPTH} levels deep")
        left = self.unary()
        while True:
            op = self.tok.value or self.tok.text if self.tok.kind in ("keyword", "op") else ""
            prec = _PRECEDENCE.get(op, 0)
            if prec < min_prec or not prec:
                break
            op_tok = self.next()
            left = self.binary(op, op_tok, left)
        self.depth -= 1
        return left

    def binary(self, op: str, op_tok: _Token, left: _Expr) -> _Expr:
        returns_bool = self.is_keyword("bool")
        if returns_bool:
            self.next()
        matching: list[str] = []
        on = card = False
        if self.is_keyword("on", "ignoring"):
            on = self.next().value == "on"
            matching = self.grouping_labels()
            if self.is_keyword("group_left", "group_right"):
                self.next()
                card = True
                include = self.grouping_labels() if self.tok.kind == "(" else []
                if on and (both := sorted(set(matching) & set(include))):
                    raise self.fail(f"label {both[0]!r} must not be in both on(...) and {op} group_left/right(...)",
                                    op_tok.pos)  # fmt: skip
        if self.tok.kind == "eof":
            raise self.fail(
                f"unexpected end of input after the operator {op!r}, expected its right-hand side"
            )
        right = self.expr(_PRECEDENCE[op] + (op != "^"))
        if returns_bool and op not in _COMPARISONS:
            raise self.fail(f"bool can only follow a comparison operator, not {op!r}", op_tok.pos)
        for side in (left, right):
            if side.type not in (SCALAR, VECTOR):
                raise self.fail(f"the operator {op!r} needs scalars or instant vectors on both sides, got {_a(side.type)} "
                                "(a range vector needs a function such as rate())", side.pos)  # fmt: skip
        scalar_side = SCALAR in (left.type, right.type)
        if op in _COMPARISONS and not returns_bool and left.type == right.type == SCALAR:
            raise self.fail(f"a comparison between two scalars needs bool ({op} bool)", op_tok.pos)
        if scalar_side and matching:
            raise self.fail("on(...)/ignoring(...) need instant vectors on both sides", op_tok.pos)
        if op in _SET_OPERATORS and scalar_side:
            raise self.fail(
                f"the set operator {op!r} needs instant vectors on both sides, not a scalar", op_tok.pos
            )
        if op in _SET_OPERATORS and card:
            raise self.fail(f"group_left/group_right are not allowed with {op!r}", op_tok.pos)
        return _Expr(VECTOR if VECTOR in (left.type, right.type) else SCALAR, left.pos)

    def unary(self) -> _Expr:
        if self.tok.kind == "op" and self.tok.text in "+-":
            sign = self.next()
            if self.tok.kind == "eof":
                raise self.fail(f"unexpected end of input after {sign.text!r}, expected an expression")
            operand = self.expr(_PRECEDENCE["^"])
            if operand.type not in (SCALAR, VECTOR):
                raise self.fail(f"unary {sign.text!r} needs a scalar or an instant vector, got {_a(operand.type)}",
                                sign.pos)  # fmt: skip
            return _Expr(operand.type, sign.pos)
        return self.modifiers(self.primary())

    def primary(self) -> _Expr:
        tok = self.tok
        if tok.kind == "number":
            self.next()
            _number(tok, self.text)
            return _Expr(SCALAR, tok.pos)
        if tok.kind == "string":
            self.next()
            return _Expr(STRING, tok.pos, value=tok.value)
        if tok.kind == "(":
            self.next()
            inner = self.expr(0)
            self.expect(")", "inside parentheses")
            return _Expr(inner.type, tok.pos)
        if tok.kind == "{":
            return self.selector(None)
        following = self.toks[self.i + 1] if tok.kind != "eof" else tok
        if (
            (tok.value or tok.text) in _AGGREGATION_PARAM
            and tok.kind in ("keyword", "ident")
            and (
                following.kind == "("
                or (following.kind == "keyword" and following.value in ("by", "without"))
            )
        ):
            return self.aggregation()
        if tok.kind == "ident" and following.kind == "(":
            return self.call()
        if tok.kind in ("ident", "metric") or (tok.kind == "keyword" and tok.value in _METRIC_KEYWORDS):
            self.next()
            return self.selector(tok)
        if tok.kind == "eof":
            raise self.fail("unexpected end of input, expected an expression")
        if tok.kind == "duration":
            raise self.fail(f"unexpected {tok!r}: a duration belongs in [...] or after offset")
        raise self.fail(f"unexpected {tok!r}, expected an expression (a number, string, selector, function, "
                        "aggregation or '(')")  # fmt: skip

    def selector(self, name: _Token | None) -> _Expr:
        pos = self.tok.pos if name is None else name.pos
        matchers: list[tuple[str, str, str]] = []
        if self.tok.kind == "{":
            self.next()
            while self.tok.kind != "}":
                label = self.expect("ident", "in label matching (a label name)")
                if self.tok.kind != "match":
                    raise self.fail(f"unexpected {self.tok!r} after the label {label.text!r}, expected one of "
                                    "= != =~ !~")  # fmt: skip
                op = self.next().text
                value = self.tok
                if value.kind != "string":
                    raise self.fail(f"unexpected {value!r} in label matching, expected a quoted string")
                self.next()
                if op in ("=~", "!~") and (problem := regex_problem(value.value)):
                    raise self.fail(f"invalid regular expression {value.value[:80]!r}: {problem}", value.pos)
                matchers.append((label.text, op, value.value))
                if self.tok.kind == ",":
                    self.next()
                elif self.tok.kind != "}":
                    raise self.fail(f"unexpected {self.tok!r} in label matching, expected ',' or '}}'")
            self.next()
        if name is not None and any(label == "__name__" for label, _, _ in matchers):
            raise self.fail(
                f"the metric name is set twice: {name.text!r} and __name__ inside the braces", pos
            )
        if name is None and all(_matches_empty(op, value) for _, op, value in matchers):
            raise self.fail("a selector without a metric name needs at least one matcher that does not match the "
                            "empty string (e.g. {job=\"x\"}, not {} or {job=~\".*\"})", pos)  # fmt: skip
        return _Expr(VECTOR, pos, "selector")

    def grouping_labels(self) -> list[str]:
        self.expect("(", "after by/without/on/ignoring/group_left/group_right")
        labels: list[str] = []
        while self.tok.kind != ")":
            if self.tok.kind not in ("ident", "keyword"):
                raise self.fail(f"unexpected {self.tok!r} in a label list, expected a label name or ')'")
            labels.append(self.next().text)
            if self.tok.kind == ",":
                self.next()
            elif self.tok.kind != ")":
                raise self.fail(f"unexpected {self.tok!r} in a label list, expected ',' or ')'")
        self.next()
        return labels

    def arguments(self, what: str) -> list[_Expr]:
        self.expect("(", f"after {what}")
        args: list[_Expr] = []
        while self.tok.kind != ")":
            args.append(self.expr(0))
            if self.tok.kind == ",":
                comma = self.next()
                if self.tok.kind == ")":
                    raise self.fail(f"trailing comma in the arguments of {what}", comma.pos)
            elif self.tok.kind != ")":
                raise self.fail(f"unexpected {self.tok!r} in the arguments of {what}, expected ',' or ')'")
        self.next()
        return args

    def call(self) -> _Expr:
        name = self.next()
        if name.text not in _FUNCTIONS:
            raise self.fail(f"unknown function {name.text!r}", name.pos)
        types, variadic, result = _FUNCTIONS[name.text]
        args = self.arguments(f"{name.text}()")
        least = len(types) - (variadic != 0)
        most = len(types) + variadic - 1 if variadic > 0 else len(types) if variadic == 0 else len(args)
        if not least <= len(args) <= most:
            want = (
                str(least) if least == most else f"{least} to {most}" if variadic > 0 else f"at least {least}"
            )
            raise self.fail(f"{name.text}() takes {want} argument(s), got {len(args)}", name.pos)
        for k, arg in enumerate(args):
            want_type = types[min(k, len(types) - 1)]
            if arg.type != want_type:
                raise self.fail(f"argument {k + 1} of {name.text}() must be {_a(want_type)}, got {_a(arg.type)}"
                                + (" (add a range such as [5m])" if want_type == MATRIX and arg.kind == "selector"
                                   else ""), arg.pos)  # fmt: skip
        for k in _LABEL_ARGUMENTS.get(name.text, ()):
            self.label_argument(args, k, f"argument {k + 1} of {name.text}()")
        if name.text == "label_replace" and (problem := regex_problem(args[4].value or "")):
            self.at_run_time.append(
                self.fail(f"invalid regular expression in label_replace(): {problem}", args[4].pos)
            )
        return _Expr(result, name.pos)

    def label_argument(self, args: list[_Expr], k: int, what: str) -> None:
        """Record when string argument ``k`` is a literal but no label name (Prometheus refuses it when it
        evaluates the query: 422 execution)."""
        arg = args[k] if k < len(args) else None
        if arg is not None and arg.value is not None and not is_label_name(arg.value):
            self.at_run_time.append(
                self.fail(f"{what} must be a label name, got {arg.value[:80]!r}", arg.pos)
            )

    def aggregation(self) -> _Expr:
        op = self.next()
        name = op.value or op.text
        if self.is_keyword("by", "without"):
            self.next()
            self.grouping_labels()
            args = self.arguments(f"{name}")
        else:
            args = self.arguments(f"{name}")
            if self.is_keyword("by", "without"):
                self.next()
                self.grouping_labels()
        param = _AGGREGATION_PARAM[name]
        want = 1 + (param is not None)
        if len(args) != want:
            raise self.fail(f"{name} takes {want} argument(s), got {len(args)}", op.pos)
        if param is not None and args[0].type != param:
            raise self.fail(
                f"the parameter of {name} must be {_a(param)}, got {_a(args[0].type)}", args[0].pos
            )
        if args[-1].type != VECTOR:
            raise self.fail(f"{name} aggregates an instant vector, got {_a(args[-1].type)}", args[-1].pos)
        if name == "count_values":
            self.label_argument(args, 0, "the parameter of count_values")
        return _Expr(VECTOR, op.pos)

    def modifiers(self, expr: _Expr) -> _Expr:
        """Ranges ``[5m]``, subqueries ``[1h:5m]``, ``offset`` and ``@`` after ``expr``."""
        selectable = ("selector", "matrix", "subquery")
        while True:
            tok = self.tok
            if tok.kind == "[":
                self.next()
                _duration_ns(self.expect("duration", "after '['"), self.text)
                if self.tok.kind == ":":
                    self.next()
                    if self.tok.kind == "duration":
                        _duration_ns(self.next(), self.text)
                    self.expect("]", "after a subquery's resolution")
                    if expr.type != VECTOR:
                        raise self.fail(
                            f"a subquery [range:step] needs an instant vector, got {_a(expr.type)}", tok.pos
                        )
                    expr = _Expr(MATRIX, expr.pos, "subquery")
                    continue
                self.expect("]", "after a range")
                if expr.kind != "selector":
                    raise self.fail("a range [...] can only follow a vector selector (use a subquery [range:] "
                                    "for an expression)", tok.pos)  # fmt: skip
                if expr.offset or expr.at:
                    raise self.fail("offset and @ go after the range, not before it", tok.pos)
                expr = _Expr(MATRIX, expr.pos, "matrix")
            elif self.is_keyword("offset"):
                self.next()
                if self.tok.kind == "op" and self.tok.text == "-":
                    self.next()
                _duration_ns(self.expect("duration", "after offset"), self.text)
                if expr.kind not in selectable:
                    raise self.fail("offset must follow a vector selector, a range or a subquery", tok.pos)
                if expr.offset:
                    raise self.fail("offset is given twice", tok.pos)
                expr.offset = True
            elif tok.kind == "@":
                self.next()
                if self.is_keyword("start", "end"):
                    self.next()
                    self.expect("(", "after @ start/end")
                    self.expect(")", "after @ start(/end(")
                else:
                    if self.tok.kind == "op" and self.tok.text in "+-":
                        self.next()
                    value = _number(self.expect("number", "after @ (a Unix time in seconds)"), self.text)
                    if not abs(value) < 2.0**63:  # NaN too
                        raise self.fail(f"the @ time {value:g} is out of range", tok.pos)
                if expr.kind not in selectable:
                    raise self.fail("@ must follow a vector selector, a range or a subquery", tok.pos)
                if expr.at:
                    raise self.fail("@ is given twice", tok.pos)
                expr.at = True
            else:
                return expr


def check(promql: str) -> str:
    """The value type of ``promql`` (``instant vector``, ``range vector``, ``scalar`` or ``string``) if Prometheus's
    parser accepts it: what it refuses (syntax, unknown functions, wrong argument types, ``{}``, RE2's regex
    syntax) raises here, with the position. The verdict is promtool's (tests/unit/test_promql_lexer.py).

    :raises PromqlSyntaxError: naming the position and what was expected there.
    """
    return _Parser(promql).parse()


def check_range_query(promql: str) -> str:
    """Like :func:`check`, and also refuse what parses but fails as a ``query_range`` every time: a result that
    is a range vector or a string, a literal label name or regex that ``label_replace``, ``label_join`` or
    ``count_values`` refuses when it runs. This is the check a configured query gets at DAG parse time.

    :returns: ``instant vector`` or ``scalar``.
    :raises PromqlSyntaxError: naming the position and the problem.
    """
    parser = _Parser(promql)
    kind = parser.parse()
    if parser.at_run_time:
        raise parser.at_run_time[0]
    if kind not in (VECTOR, SCALAR):
        hint = " (wrap it in a function such as rate() or max_over_time())" if kind == MATRIX else ""
        raise PromqlSyntaxError(f"the query's result is {_a(kind)}; a range query needs an instant vector or a "
                                f"scalar{hint}", len(promql) - len(promql.lstrip()), promql)  # fmt: skip
    return kind
