"""Operator tooling: replaying a topic window after an incident, and the dead-letter topic's list, inspect,
requeue and depth exporter. The CLI (``services/auditctl/recovery.py``) is a thin layer over these modules."""
