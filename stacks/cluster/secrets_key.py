"""KMS key for envelope encryption of Kubernetes secrets."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from constructs import Construct


class SecretsKey(Construct):
    """Customer-managed key, yearly automatic rotation, retained on stack deletion.

    Retained because secrets encrypted with it (in etcd backups, or a cluster restored elsewhere) are
    unreadable without it; a 30-day deletion window applies if it is ever scheduled for deletion.
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster_name: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Envelope encryption of Kubernetes secrets of EKS cluster {cluster_name}",
            enable_key_rotation=True,
            pending_window=Duration.days(30),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.key.add_alias(f"alias/{cluster_name}/eks-secrets")
