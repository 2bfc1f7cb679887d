"""Names a hostile or careless user gives a model or an instance (an MLflow tag, a label, a pasted string).

Each is data: it must go through extract, correlate, evaluate, report, alert, publish and the view as text,
never as markup (HTML, mathtext, a template), never as a path (``/``, ``..``), and bounded where it becomes
a file or object name. Shared by the unit tests of each step and the DAG run that feeds them all at once
(``tests/integration/test_hostile_names.py``).
"""

from __future__ import annotations

HOSTILE_NAMES: tuple[str, ...] = (
    # matplotlib mathtext: two "$" make a formula it cannot typeset
    r"$\foo$", "price_$1_to_$2", "$$", r"$\frac{1}{0}$", r"a\$b$c",
    # paths: separators, traversal, hidden files, what Windows refuses
    "team/fraud-detector", "../../etc/passwd", "..", ".", "/", "a//b", "_hidden", ".hidden", "CON", "nul.txt",
    r"back\slash", "%2F..%2F", "dt=2026-03-03", "run=x/part-00000.parquet",
    # markup and templates: HTML, Alertmanager/Go templates, Jinja, shell
    "<script>alert(1)</script>", "\"quoted\" & 'single'", "{{ .Labels.model }}", "{{ 7*7 }}", "${HOME}", "$(reboot)",
    "`id`", "a;b|c&&d", "'; DROP TABLE runs; --", "<!-- -->", "]]>", "x\" onmouseover=\"alert(1)",
    # whitespace and control characters
    "line\nbreak", "tab\there", "trailing space ", " leading", "carriage\rreturn", "bell\x07", "form\x0cfeed",
    # Unicode: CJK (28 characters percent-encode past 255 bytes), emoji, RTL override, combining marks
    "欺诈检测模型" * 5, "模型", "🚀 rocket-model", "\u202eevil\u202c", "e\u0301\u0301\u0301", "Ωmega", "ß-model",
    "ｆｕｌｌｗｉｄｔｈ", "\ufeffbom", "zero\u200bwidth",
    # URL and query syntax, PromQL and label syntax
    "a?b=c&d#e", "http://evil.example/x", 'cpu{mode="idle"}', "a=b,c=d", "model:with:colons", "%s%n%x",
    # long: 300 characters, and a 300-character name that differs from another only at the end
    "m" * 299 + "1", "m" * 299 + "2",
)

assert len(HOSTILE_NAMES) >= 50 and len(set(HOSTILE_NAMES)) == len(HOSTILE_NAMES)
