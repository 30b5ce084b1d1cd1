"""Small helpers shared by constructs."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_logs as logs
from constructs import IConstruct

from config.base import LOG_RETENTION_DAYS

# logs.RetentionDays members are names (ONE_DAY, ...) in ascending order, INFINITE last.
_RETENTION = dict(
    zip(LOG_RETENTION_DAYS, [m for m in logs.RetentionDays if m.name != "INFINITE"], strict=True)
)


def retention(days: int) -> logs.RetentionDays:
    """The ``logs.RetentionDays`` member for a day count the config has validated."""
    return _RETENTION[days]


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one validation finding (cdk-nag rule, ``Rule[finding]``) on ``scope`` and below.

    The reason is part of the compliance record: say why it is right for this product, not what the rule is.
    """
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def managed_policy_finding(policy_name: str) -> str:
    """The cdk-nag finding id of an AWS managed policy attached to a role (``AwsSolutions-IAM4[...]``)."""
    return f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy_name}]"
