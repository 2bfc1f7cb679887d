"""
### Threshold replay

Before changing `include/thresholds.yaml`, see what the change would have done: this DAG judges stored days
again under the thresholds in force and under a candidate, and says how many pages each verdict kind
(`degraded`, `no_data`, `quality`, `drift`, ...) would have sent, and on which days, side by side.

**Trigger form**: paste the keys to change as YAML (or a whole thresholds.yaml), e.g.

```yaml
drift:
  values:
    prediction_time: {psi: 0.1}
```

(merged key by key onto the thresholds in force; an empty mapping such as `models: {}` clears what it
names), and pick the days (default: the 7 days before the run's logical date; a long range is refused with a
pointer to `make replay`, which has no limit).

It reads only the lake's canonical `predictions` and `resources` partitions (what the scheduled runs saw),
posts nothing to Alertmanager and writes nothing. **Where the result is**: the `replay_thresholds` task's
log and XCom (`table`).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param

from modelwatch import tasks
from modelwatch.config import load_config
from modelwatch.monitoring_dag import MonitoringDAG, Tag, run_policy

# Validated at parse time: a bad thresholds.yaml is an import error naming file, key and problem.
CONFIG = load_config()

with MonitoringDAG(
    dag_id="modelwatch_threshold_replay",
    doc_md=__doc__,
    description="Judge stored days under candidate thresholds beside the current ones, without paging",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,
    tags=[Tag.MODELWATCH, Tag.ML],
    # owner, retry budget, failure email and Deadline Alert, as every modelwatch DAG
    **run_policy(CONFIG),
    params={
        "candidate": Param("", type="string", format="multiline", title="Candidate thresholds (YAML)",
                           description="The keys to change, or a whole thresholds.yaml; merged onto the one "
                                       "in force."),
        "from": Param("", type="string", title="First day",
                      description="YYYY-MM-DD (empty: 7 days before the run's logical date)."),
        "to": Param("", type="string", title="Last day",
                    description="YYYY-MM-DD, inclusive (empty: the day before the run's logical date)."),
    },  # fmt: skip
):
    tasks.replay_thresholds()
