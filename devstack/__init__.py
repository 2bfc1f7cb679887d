"""Development tooling for modelwatch: the local real stack (:mod:`devstack.stack`) and its seeding.

Not shipped to Airflow. ``make demo``, ``make stack-up``/``make stack-down`` and the pytest session
fixtures all go through :class:`devstack.stack.Stack`; see ``devstack/CONTRACT.md``.
"""
