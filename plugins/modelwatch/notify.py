"""The failure email: which DAG, which run, which task, and where its log is."""

from __future__ import annotations

from typing import Any

FAILURE_SUBJECT = "[modelwatch] {{ dag.dag_id }} failed: task {{ ti.task_id }} in run {{ run_id }}"
FAILURE_HTML = (
    "<p>modelwatch run <b>{{ run_id }}</b> of DAG <b>{{ dag.dag_id }}</b> failed.</p>"
    "<ul><li>failed task: <b>{{ ti.task_id }}</b> (try {{ ti.try_number }})</li>"
    "<li>window: {{ dag_run.data_interval_start }} to {{ dag_run.data_interval_end }}</li>"
    "<li>error: {{ exception | e }}</li>"
    "<li>log: <a href=\"{{ ti.log_url }}\">{{ ti.log_url }}</a></li></ul>"
)


def failure_email(to: str | list[str], smtp_conn_id: str = "smtp_default") -> Any:
    """An ``SmtpNotifier`` for ``on_failure_callback`` that names DAG, run, failed task and log link.

    It runs when a task has failed for good (after its retries). A failed send is logged by Airflow and
    does not change the run's state.
    """
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=to,
        from_email="modelwatch@localhost",
        subject=FAILURE_SUBJECT,
        html_content=FAILURE_HTML,
        smtp_conn_id=smtp_conn_id,
    )
