"""The Pulumi program: reads the stack's config and declares modelwatch's AWS resources.

Everything lives in :mod:`modelwatch_infra` (tested with Pulumi's mocks in tests/unit/test_infra.py).
"""

import pulumi

from modelwatch_infra.program import build
from modelwatch_infra.settings import Settings

for _name, _value in build(Settings.from_config(pulumi.Config())).items():
    pulumi.export(_name, _value)
