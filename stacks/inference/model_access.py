"""Read-only S3 access to the model object for the inference pods (EKS Pod Identity)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.addons.pod_identity import PodIdentityRole


class ModelAccess(Construct):
    """A Pod Identity role for ``namespace/service_account`` that may read exactly ``s3://bucket/key``.

    ``s3:GetObject`` on the object (GET and HEAD, ranged GETs for resume) and ``s3:ListBucket`` on the
    bucket limited to that key (so a missing object is a 404, not an opaque 403). Nothing else: no
    write, no other keys. ``association`` must exist before the pods start: the Pod Identity webhook
    injects credentials only into pods created after it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        namespace: str,
        service_account: str,
        bucket: str,
        key: str,
    ) -> None:
        super().__init__(scope, construct_id)
        partition = Stack.of(self).partition
        self.identity = PodIdentityRole(
            self,
            "Identity",
            cluster=cluster,
            namespace=namespace,
            service_account=service_account,
            description=f"Inference pods {namespace}/{service_account}: read s3://{bucket}/{key}",
        )
        self.role: iam.Role = self.identity.role
        self.association = self.identity.association
        self.policy = iam.Policy(
            self,
            "ReadModel",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(
                    sid="ReadModelObject",
                    actions=["s3:GetObject"],
                    resources=[f"arn:{partition}:s3:::{bucket}/{key}"],
                ),
                iam.PolicyStatement(
                    sid="ListModelKey",
                    actions=["s3:ListBucket"],
                    resources=[f"arn:{partition}:s3:::{bucket}"],
                    conditions={"StringEquals": {"s3:prefix": [key]}},
                ),
            ],
        )
