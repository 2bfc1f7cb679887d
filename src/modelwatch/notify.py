"""The failure email: which DAG, which run, which task, and where its log is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FAILURE_SUBJECT = "[modelwatch] {{ dag.dag_id }} failed: task {{ ti.task_id }} in run {{ run_id }}"
FAILURE_HTML = (
    "<p>modelwatch run <b>{{ run_id }}</b> of DAG <b>{{ dag.dag_id }}</b> failed.</p>"
    "<ul><li>failed task: <b>{{ ti.task_id }}</b> (try {{ ti.try_number }})</li>"
    "<li>data interval: {{ dag_run.data_interval_start }} to {{ dag_run.data_interval_end }}"
    " (run after {{ dag_run.run_after }}; a trigger-form window is in the task log)</li>"
    "<li>error: {{ exception | e }}</li>"
    "<li>log: <a href=\"{{ ti.log_url }}\">{{ ti.log_url }}</a></li></ul>"
)


def failure_email(to: str | list[str], smtp_conn_id: str = "smtp_default") -> Callable[[Any], None]:
    """An ``on_failure_callback`` that emails, through ``SmtpNotifier``, the DAG, run, failed task and log link.

    It runs when a task has failed for good (after its retries). A failed send is logged by Airflow and
    does not change the run's state. A new notifier per call: a notifier renders its templates in place,
    so one shared object would repeat the first failure's subject in every later email of the process.
    """

    def notify(context: Any) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(
            to=to,
            from_email="modelwatch@localhost",
            subject=FAILURE_SUBJECT,
            html_content=FAILURE_HTML,
            smtp_conn_id=smtp_conn_id,
        )(context)

    return notify


async def deadline_missed(
    context: dict[str, Any] | None = None, *, to: list[str], smtp_conn_id: str = "smtp_default"
) -> str:
    """Deadline Alert callback (runs in the triggerer): email that a run has not finished in time.

    The triggerer hands over a small context: ``dag_run`` (the run as the REST API shows it) and
    ``deadline`` (its ``deadline_time``).
    """
    import asyncio

    from airflow.providers.smtp.hooks.smtp import SmtpHook

    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    # the run as the REST API shows it: its id is "dag_run_id"
    run_id = run.get("dag_run_id") or run.get("run_id")
    subject = f"[modelwatch] {run.get('dag_id')} run {run_id} missed its deadline"
    html = (
        f"<p>Run <b>{run_id}</b> of DAG <b>{run.get('dag_id')}</b> had not finished by "
        f"{deadline.get('deadline_time')} (state: {run.get('state')}; window {run.get('data_interval_start')} "
        f"to {run.get('data_interval_end')}). Its verdicts are late: check the scheduler and the run's tasks.</p>"
    )

    def send() -> None:
        with SmtpHook(smtp_conn_id=smtp_conn_id) as hook:
            hook.send_email_smtp(to=to, subject=subject, html_content=html, from_email="modelwatch@localhost")

    await asyncio.to_thread(send)
    return subject
