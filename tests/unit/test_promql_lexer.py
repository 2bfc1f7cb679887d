"""modelwatch.promql.check: PromQL that Prometheus would refuse is refused when the configuration is validated,
with the position and what was expected, and PromQL it accepts passes. promtool (Prometheus 2.42, the
version of this stack) is the judge: on the corpus below our verdict must be its verdict."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from modelwatch.promql import (
    MAX_DEPTH,
    PromqlLexError,
    PromqlSyntaxError,
    analyse,
    check,
    check_range_query,
    presence_promql,
    raw_samples_promql,
    regex_problem,
    sample_time_promql,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "include" / "thresholds.yaml", REPO / "include" / "thresholds.live.yaml"]

VALID = [
    # the grammar, piece by piece
    "up", "node_load1", "x:recorded:rate5m", 'x{job="a"}', "x{}", 'x{a="b",}', 'x {a="b"}', '{__name__="x"}',
    '{__name__=~"node_.+", job="n"}', '{job!=""}', 'x{a!~".*"}', '{a=~"x", b=~".*"}',
    "x{mode=~'idle|iowait'}", "x{path=`C:\\dir`}", 'x{a="\\u00e9\\x41\\101\\"\\\\"}', 'x{a="unicode ✓ модель"}',
    "x[5m]", "x[1h30m]", "x[1y2w3d4h5m6s7ms]", "x[ 5m ]", "x [5m]", "x[5m:]", "x[1h:5m]", "x[5m :1m]",
    "rate(x[5m])[1h:1m]", "max_over_time(rate(x[5m])[30m:1m])", "(x)[5m:]", "x offset 5m", "x offset -1h",
    "x OFFSET 5m", "x[5m] offset 1w", "x[1h:5m] offset 1m @ 100", "x @ 1609459200", "x @ -5", "x @ 1e3",
    "x @ 0x1f", "x @ start()", "x @ end() offset 1m", "x offset 5m [5m:1m]",
    "1", "1e3", "1.5e-3", ".5", "5.", "0x1f", "017", "Inf", "-Inf", "NaN", "+1", "- - x", "x--1", "-2 ^ 2",
    "2 ^ 3 ^ 2", '"a string"', "'single'", "`raw`",
    "x + y", "x - y * z / w % v ^ u", "x atan2 y", "x == bool y", "1 > bool 2", "x > 1 < 2", "x and y",
    "x or y unless z", "x AND y", "a + on(b) c", "a * on(b) group_left c", "a * on(b) group_left(c, d) e",
    "a / ignoring(b) group_right(c) e", "a * on(b) group_left (c) d", "a * ignoring(x) group_left(x) b",
    "x > bool on(a) group_left y", "a * on() b", "x + on() 1", "a + on(a,) b", "a or on(x) b",
    "sum(x)", "SUM(x)", "sum by (a) (x)", "sum(x) by (a)", "sum without () (x)", "sum by (a,) (x)",
    "Sum By (a) (x)", "sum by (sum, on, bool, offset) (x)", "topk(3, x)", "bottomk(3, x) by (a)",
    "topk by (a) (3, x)", "quantile(0.9, x)", 'count_values("v", x)', "count_values without (a) ('v', x)",
    "stddev(x) + stdvar(x) + group(x) + count(x) + avg(x) + min(x) + max(x)",
    "rate(x[5m])", "quantile_over_time(0.95, x[5m])", "histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))",
    'label_replace(x, "dst", "$1", "src", "(.*)")', 'label_join(x, "dst", ",", "a", "b")', "round(x)",
    "round(x, 5)", "clamp(x, 0, 1)", "time()", "vector(time())", "scalar(x) > bool 1", "day_of_week()",
    "absent(x)", "absent_over_time(x[5m])", "predict_linear(x[5m], 60)", "holt_winters(x[5m], 0.5, 0.5)",
    "rate(x[5m] offset 1h)", "rate(x[5m] @ end())", "histogram_count(x)",
    # words that are keywords elsewhere still name metrics where an expression starts
    "sum", "by", "offset", "without", "and", "x and and", "x + offset", "sum{a=\"b\"}", "infinity", "abs",
    # comments and layout
    "x # a comment", 'sum(x) # c\n + 1', 'x{a="b" # c\n}', "x\t+\ty", "x+y", "sum by(a)(x)", "x@1",
    # the brief's expressions and the configured ones (more below, read from include/)
    '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m]))',
    '(sum by (instance) (rate(http_requests_total{status="5xx"}[1m])) or sum by (instance) '
    "(rate(http_requests_total[1m])) * 0) / sum by (instance) (rate(http_requests_total[1m]))",
    'label_replace(vector(0.95), "instance", "a \\"b\\" c", "", "")',
]  # fmt: skip

INVALID = [
    # the brief's examples
    'rate(x{mode="idle"[5m])', "rate(x[5q])", "sum(rate(x[5m])", "sum(x))", "(x", "x)", 'x{a="b} + 1', "'abc",
    "`abc", '"', "x +", "x or", "x ==", "{}", '{a=""}', '{a=~".*"}', '{a!~".+"}', '{__name__=~".*"}',
    # lexing
    "x[5]", "x[m]", "x[]", "x[5M]", "x[1.5m]", "x[30m1h]", "x[5m1m]", "x[0s]", "x[293y]", "1h", "5x", "1_000",
    "1e", "1e400", "0x", "x offset5m", "x{1a=\"b\"}", "x{é=\"b\"}", "é", "!x", "x =~ y", "x = y", "x <> y", "x}",
    "x]", "x[5m", "{", "x{", "x{a", "x{a=", 'x{a="b"', 'x{a="\\q"}', 'x{a="\\400"}', 'x{a="\\u00"}',
    'x{a="\\uD800"}', "'\\\"'", '"\\\'"', 'x{a="line\nbreak"}', "x[5m:1m:1m]", "x[[5m]]",
    # structure
    "", "   ", "# only a comment", "()", "(x)(y)", "x y", "x,", "x (y)", "abs(x)(y)", "== x", "x == == y",
    "or x", "+", "x + on", "x + on(", "x + on(a", "x + group_left y", "x + on(a) group_left(", "x{a=\"b\" c=\"d\"}",
    "x{a=b}", "x{a}", 'x{a="b"}{c="d"}', "x{,}", 'x{a="b",,}', 'x{,a="b"}', "sum by", "sum by (a) (x) by (b)",
    "sum by a (x)", "sum by (a b) (x)", "sum by (a,,b) (x)", 'sum by ("a") (x)', "sum by (a:b) (x)",
    "sum by (nan) (x)", "sum()", "sum(x,)", "rate(x[5m],)", "on", "bool", "atan2", "ignoring", "group_left",
    "x Bool y", "start()", "a:b(x)",
    # modifiers
    "x offset", "x offset 0s", "x offset 5", "x offset +5m", "x offset 5m offset 5m", "x offset 5m [5m]",
    "x @ 1 [5m]", "x @ 1 @ 2", "x @ NaN", "x @ Inf", "x @ 1e19", 'x @ "a"', "x @ y", "x @ (1)", "x @ start(1)",
    "x @ start", "@ 1", "offset 5m", "sum(x) offset 1m", "vector(1) offset 5m", "rate(x[5m]) @ 1",
    "((x)) offset 5m", "(x)[5m]", "x[5m] [5m]", "x[5m][1h:]", "x[5m:1m][10m:1m]", "x[5m:0s]", "x[:5m]",
    # types
    "1 > 2", "x and 1", "1 and x", "a and on(b) group_left c", "x and bool y", "a + bool b", "a > on(x) bool b",
    "1 + on(x) 2", "x + on(a) 1", "a * on(x) group_left(x) b", "-x[5m]", '-"a"', '"a" + 1', "x[1m] + 1",
    "x[5m] - x[5m]", "rate(x)", "absent(x[5m])", 'sum("a")', "topk(x)", "topk(3, x, y)", "count_values(3, x)",
    'quantile("a", x)', "histogram_quantile(x, rate(x_bucket[5m]))", "quantile_over_time(x[5m], 0.95)",
    'label_replace(x, "a", "b", "c")', 'label_replace(x, a, "b", "c", "d")', 'label_join(x, "a")',
    "round(x, 5, 6)", "vector()", "time(1)", "rat(x[5m])", "RATE(x[5m])", "limit_k(2, x)",
    'x{__name__="y"}', 'x{__name__="x"}',
    # regular expressions RE2 refuses
    '{a=~"("}', '{a=~"a{2,1}"}', '{a=~"*"}', '{a=~"a**"}', '{a=~"[a-"}', '{a=~"\\\\"}', '{a=~"(?=x)"}',
    'x{a=~"(?!x)y"}', '{a=~"(x)\\\\1"}', '{a=~"x++"}', '{a=~"(?>x)"}', '{a=~"x{1001}"}', '{a=~"\\\\C"}',
    '{a=~"[[:foo:]]"}', '{a=~"[[:alpha:]"}', '{a=~"x|"}', '{a=~"\\\\z"}', '{job=~".*"} or vector(1)',
]  # fmt: skip

#: 600 nested groups (RE2 reads them; Python's re cannot) and 1001 (RE2 refuses them)
DEEP_GROUPS = ['{a=~"' + "(" * 600 + "x" + ")" * 600 + '"}', '{a=~"' + "(" * 1001 + "x" + ")" * 1001 + '"}']

#: accepted by newer Prometheus releases (3.x functions, Go 1.22's named groups): let through, not compared
#: with this stack's promtool, which is older
NEWER = ['limitk(2, x)', 'sort_by_label(x, "a")', "mad_over_time(x[5m])", 'x{a=~"(?<name>x)"}',
         "double_exponential_smoothing(x[5m], 0.5, 0.5)", "histogram_avg(x)"]  # fmt: skip


def configured_queries() -> list[str]:
    """Every PromQL of the shipped configurations."""
    queries = [
        q["promql"]
        for p in CONFIGS
        for q in yaml.safe_load(p.read_text(encoding="utf-8"))["prometheus"]["queries"]
    ]
    return list(dict.fromkeys(queries))


def companion_queries() -> list[str]:
    """The queries extraction derives from the configured ones (the raw samples: a range vector, read at an
    instant)."""
    out = []
    for promql in configured_queries():
        out.append(sample_time_promql(promql) or "vector(1)")
        for selector in analyse(promql)[0]:
            out += [
                presence_promql(selector),
                raw_samples_promql(selector, 86_700_000),
                raw_samples_promql(selector, 1500),
            ]
    return list(dict.fromkeys(out))


def verdict(promql: str) -> bool:
    try:
        check(promql)
    except PromqlSyntaxError:
        return False
    return True


def test_the_corpus_is_large_and_without_doubles() -> None:
    assert len(set(VALID)) == len(VALID) >= 40 and len(set(INVALID)) == len(INVALID) >= 25
    assert not set(VALID) & set(INVALID)


@pytest.mark.parametrize("promql", [*VALID, *NEWER])
def test_valid_promql_passes(promql: str) -> None:
    assert verdict(promql), check(promql)


@pytest.mark.parametrize("promql", INVALID)
def test_invalid_promql_is_refused(promql: str) -> None:
    with pytest.raises(
        PromqlSyntaxError, match=r"^at (character \d+|line \d+, column \d+) \((near .+|the end)\): "
    ):
        check(promql)


def test_every_configured_query_and_its_companions_pass() -> None:
    for promql in configured_queries():
        assert check_range_query(promql) in ("instant vector", "scalar"), promql
    for promql in companion_queries():
        assert check(promql) in ("instant vector", "range vector"), promql


def test_promtool_agrees_on_every_expression(tmp_path: Path) -> None:
    """One rules file per expression, one promtool run over them all: its verdict must be ours."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("`promtool` is not installed (Debian: apt-get install prometheus)")
    exprs = list(dict.fromkeys([*VALID, *INVALID, *DEEP_GROUPS, *configured_queries(), *companion_queries()]))
    files = []
    for i, expr in enumerate(exprs):
        path = tmp_path / f"r{i}.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": expr}]}]}))
        files.append(path)
    proc = subprocess.run([exe, "check", "rules", "--lint=none", *map(str, files)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "SUCCESS" in out and "FAILED" in out, out[
        -2000:
    ]  # it judged both ways: the check proves something
    theirs = {e: f"Checking {p}\n  SUCCESS" in out for e, p in zip(exprs, files, strict=True)}
    differ = [
        (e, theirs[e], str(exc) if (exc := _error(e)) else "accepted")
        for e in exprs
        if theirs[e] != verdict(e)
    ]
    assert not differ, "promtool (True: accepts) and modelwatch differ on:\n" + "\n".join(map(repr, differ))


def _error(promql: str) -> PromqlSyntaxError | None:
    try:
        check(promql)
    except PromqlSyntaxError as exc:
        return exc
    return None


# -- what the message says ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("promql", "where", "words"),
    [
        ('rate(x{mode="idle"[5m])', "at character 19", ["inside braces", "expected", "'}'"]),
        ("rate(x[5q])", "at character 8", ["'5q'", "not a duration", "units ms, s, m"]),
        ("x[5]", "at character 3", ["needs a unit"]),
        ("sum(rate(x[5m])", "at character 4", ["unclosed '('", "expected ')'"]),
        ("sum(x))", "at character 7", ["unexpected ')'"]),
        ('x{a="b} + 1', "at character 5", ["unterminated string"]),
        ("x +", "at character 4 (the end)", ["after the operator '+'", "expected its right-hand side"]),
        ("{}", "at character 1", ["at least one matcher", "empty"]),
        ("rat(x[5m])", "at character 1", ["unknown function 'rat'"]),
        ("rate(x)", "at character 6", ["must be a range vector", "got an instant vector", "[5m]"]),
        ("1 > 2", "at character 3", ["needs bool"]),
        ("sum by (instance) rate(x[5m])", "at character 19", ["unexpected identifier 'rate'", "expected '('"]),
        ('{a=~"(?=x)"}', "at character 5", ["invalid regular expression", "(?="]),
        ("x\n  + on(a) group_left(a) y", "at line 2, column 3", ["'a'", "on(...)"]),
    ],
)  # fmt: skip
def test_the_message_names_position_and_expectation(promql: str, where: str, words: list[str]) -> None:
    with pytest.raises(PromqlSyntaxError) as info:
        check(promql)
    message = str(info.value)
    assert message.startswith(where), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert isinstance(info.value, PromqlLexError) and isinstance(info.value, ValueError)  # what callers catch


def test_range_query_refuses_what_parses_but_fails_every_run() -> None:
    for promql, words in [
        ("x[5m]", ["range vector", "instant vector or a scalar", "rate()"]),
        ('"text"', ["string"]),
        ('label_replace(x, "pod-name", "$1", "pod", "(.*)")', ["label name", "'pod-name'"]),
        ('label_replace(x, "dst", "$1", "src", "(")', ["invalid regular expression in label_replace()"]),
        ('count_values("a b", x)', ["count_values", "label name"]),
    ]:
        assert verdict(promql), promql  # promtool's parser takes it ...
        with pytest.raises(PromqlSyntaxError) as info:  # ... Prometheus fails it when the range query runs
            check_range_query(promql)
        for word in words:
            assert word in str(info.value), (promql, str(info.value))
    assert check_range_query("time()") == "scalar" and check_range_query("up") == "instant vector"


@pytest.mark.parametrize(
    "promql", ["(" * 500 + "x" + ")" * 500, "-" * 500 + "x", "abs(" * 500 + "x" + ")" * 500]
)
def test_deep_nesting_is_refused_not_a_recursion_error(promql: str) -> None:
    with pytest.raises(PromqlSyntaxError, match=f"nests more than {MAX_DEPTH} levels"):
        check(promql)
    check("(" * 50 + "x" + ")" * 50)


def test_regexes_python_cannot_read_get_the_benefit_of_the_doubt() -> None:
    # RE2 reads 600 nested groups, Python's re runs out of stack: not an error, and not a RecursionError
    assert check(DEEP_GROUPS[0]) == "instant vector"
    with pytest.raises(PromqlSyntaxError, match="RE2's limit"):
        check(DEEP_GROUPS[1])
    assert regex_problem("a{1,4294967296}") is not None  # Python: OverflowError; RE2: over 1000


def test_the_error_pickles() -> None:
    with pytest.raises(PromqlSyntaxError) as info:
        check("rate(x[5q])")
    again = pickle.loads(pickle.dumps(info.value))
    assert (str(again), again.position, again.problem) == (str(info.value), 7, info.value.problem)


def test_regex_problem_names_what_re2_lacks() -> None:
    assert regex_problem("idle|iowait") is None and regex_problem("[[:alpha:]]+") is None
    assert regex_problem("\\pL+") is None  # RE2 has it, Python's re not: no false alarm
    assert "backreference" in (regex_problem("(a)\\1") or "")
    assert "Perl syntax" in (regex_problem("(?<!a)b") or "")
    assert "1000" in (regex_problem("a{1,5000}") or "")
    assert "unterminated" in (regex_problem("(a") or "")


def test_checking_is_cheap() -> None:
    """It runs at every DAG parse: the shipped queries a hundred times over, and one 100 kB expression, take
    well under a second each (bounds with a wide margin for a busy machine)."""
    queries = configured_queries()
    started = time.perf_counter()
    for _ in range(100):
        for promql in queries:
            check(promql)
    assert time.perf_counter() - started < 5
    big = " + ".join(f'sum by (instance) (rate(m{i}{{a="b",c=~"d.*"}}[5m]))' for i in range(2000))
    started = time.perf_counter()
    assert check(big) == "instant vector"
    assert time.perf_counter() - started < 5
