"""Small helpers shared by constructs."""

from __future__ import annotations

from aws_cdk import aws_logs as logs

from stacks.config.network import LOG_RETENTION_DAYS

# logs.RetentionDays members are names (ONE_DAY, ...) in ascending order, INFINITE last.
_RETENTION = dict(
    zip(LOG_RETENTION_DAYS, [m for m in logs.RetentionDays if m.name != "INFINITE"], strict=True)
)


def retention(days: int) -> logs.RetentionDays:
    """The ``logs.RetentionDays`` member for a day count the config has validated."""
    return _RETENTION[days]
