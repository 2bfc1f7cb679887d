"""Verdicts as Prometheus series: each canonical run publishes its models' verdicts and key numbers, so
Grafana panels and Prometheus rules can use them (README: "Verdicts as metrics").

The series names are defined here once; the Grafana dashboard (:mod:`modelwatch.dashboard`) and the
Pushgateway publisher read them from here. Every series carries ``dag`` (the DAG variant, so the daily and
hourly runs do not overwrite each other) and, except the window's end, ``model``.
"""

from __future__ import annotations

#: 1 for the model's verdict of the newest window published, with labels ``verdict``, ``quality`` and
#: ``drift`` (an info-style series: one per model, its labels say the verdict)
VERDICT_INFO = "modelwatch_verdict_info"
#: 1 when the model is ``degraded`` (slow predictions that saturated resources explain), else 0
DEGRADED = "modelwatch_model_degraded"
#: share of the model's judged predictions in the window that were slow (0..1)
SLOW_SHARE = "modelwatch_slow_share"
#: predictions of the model in the window
PREDICTIONS = "modelwatch_predictions"
#: 1 when the model's quality ``regressed``, else 0
QUALITY_REGRESSED = "modelwatch_quality_regressed"
#: population stability index of each drift value (label ``value``), where compared
DRIFT_PSI = "modelwatch_drift_psi"
#: end of the newest window published, Unix seconds (label ``dag`` only)
WINDOW_END = "modelwatch_window_end_timestamp_seconds"
