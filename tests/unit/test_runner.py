"""devstack.runner's command line and run conf: days or one trigger-form window, with params (no Airflow run)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from devstack import runner


def test_window_conf_puts_the_window_in_the_trigger_form_params_as_iso_utc():
    conf = runner.window_conf(
        datetime(2026, 3, 3, 11, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 3, 3, 12),  # naive: UTC, as the DAG reads a time without an offset
        {"models": ["fraud-detector"], "dry_run": True},
    )
    assert conf == {
        "models": ["fraud-detector"],
        "dry_run": True,
        "window_start": "2026-03-03T10:00:00+00:00",
        "window_end": "2026-03-03T12:00:00+00:00",
    }


def test_window_conf_refuses_a_window_given_as_params():
    with pytest.raises(ValueError, match="window_start"):
        runner.window_conf(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC),
                           {"window_start": "2026-03-01T00:00:00Z"})  # fmt: skip


@pytest.fixture
def calls(monkeypatch):
    """Record what main() asks for instead of running the DAG."""
    seen: list[tuple] = []

    class Run:
        run_id, dag_id, state = "manual__x", runner.DAG_ID, "success"

        def get_task_instances(self):
            return []

    def run_window(start, end, *, dag_id, params):
        seen.append(("window", start, end, dag_id, params))
        return Run()

    def run_days(days, dag_id, *, params=None):
        seen.append(("days", list(days), dag_id, params))
        return {d: "success" for d in days}

    monkeypatch.setattr(runner, "run_window", run_window)
    monkeypatch.setattr(runner, "run_days", run_days)
    monkeypatch.setattr(runner, "xcom", lambda run, task_id: None)
    return seen


def test_cli_window_with_params(calls, capsys):
    rc = runner.main([
        "--window-start", "2026-03-03T10:00:00Z", "--window-end", "2026-03-03T12:00:00Z",
        "--param", 'models=["fraud-detector"]', "--param", "dry_run=true", "--param", "note=plain text",
    ])  # fmt: skip
    assert rc == 0
    assert calls == [(
        "window", datetime(2026, 3, 3, 10, tzinfo=UTC), datetime(2026, 3, 3, 12, tzinfo=UTC), runner.DAG_ID,
        {"models": ["fraud-detector"], "dry_run": True, "note": "plain text"},
    )]  # fmt: skip
    assert f"{runner.PROGRESS} run manual__x success" in capsys.readouterr().out


def test_cli_days_still_run_whole_days(calls):
    assert runner.main(["2026-03-02", "2026-03-03"]) == 0
    assert calls == [("days", [date(2026, 3, 2), date(2026, 3, 3)], runner.DAG_ID, None)]


def test_cli_days_take_params_too(calls):
    assert runner.main(["2026-03-03", "--param", "dry_run=true"]) == 0
    assert calls == [("days", [date(2026, 3, 3)], runner.DAG_ID, {"dry_run": True})]


@pytest.mark.parametrize("argv", [
    [],                                                       # nothing to run
    ["--window-start", "2026-03-03T10:00:00Z"],               # half a window
    ["2026-03-03", "--window-start", "2026-03-03T10:00:00Z", "--window-end", "2026-03-03T12:00:00Z"],
    ["--window-start", "yesterday", "--window-end", "2026-03-03T12:00:00Z"],
    ["2026-03-03", "--param", "dry_run"],                     # no '='
    ["--window-start", "2026-03-03T10:00:00Z", "--window-end", "2026-03-03T12:00:00Z",
     "--param", "window_end=2026-03-04T00:00:00Z"],           # the window twice
])  # fmt: skip
def test_cli_rejects_bad_arguments_before_running_anything(calls, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main(argv)
    assert exc.value.code == 2
    assert calls == []
    assert "error:" in capsys.readouterr().err
