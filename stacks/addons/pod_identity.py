"""IAM role for a Kubernetes service account through EKS Pod Identity."""

from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct


class PodIdentityRole(Construct):
    """A role only ``namespace/service_account`` of ``cluster`` can assume (Pod Identity association).

    The Helm chart creates the service account itself (no IRSA annotation: with Pod Identity none is
    needed, and a stale ``eks.amazonaws.com/role-arn`` would send SDKs down the web-identity path).
    The association depends on the cluster's ``eks-pod-identity-agent`` add-on.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        namespace: str,
        service_account: str,
        description: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = pod_identity_role(self, "Role", description=description)
        self.association = eks.CfnPodIdentityAssociation(
            self,
            "Association",
            cluster_name=cluster.cluster_name,
            namespace=namespace,
            service_account=service_account,
            role_arn=self.role.role_arn,
        )
        agent = cluster.eks_pod_identity_agent
        if agent is not None:
            self.association.node.add_dependency(agent)


def pod_identity_role(scope: Construct, construct_id: str, *, description: str) -> iam.Role:
    """A role that EKS Pod Identity can assume (``pods.eks.amazonaws.com``: sts:AssumeRole and the
    sts:TagSession it requires). Who may use it is decided by an association (:class:`PodIdentityRole`, or
    a managed add-on's ``podIdentityAssociations``)."""
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com"),
        description=description,
    )
    assert role.assume_role_policy is not None  # a Role always has one
    role.assume_role_policy.add_statements(
        iam.PolicyStatement(
            actions=["sts:TagSession"], principals=[iam.ServicePrincipal("pods.eks.amazonaws.com")]
        )
    )
    return role
