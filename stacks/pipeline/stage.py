"""``LlamaStage``: one environment's stacks as a ``cdk.Stage``, for the pipeline to deploy.

The stage does not define the platform itself: it calls the same ``build_app`` (stacks/platform.py) that a
laptop ``cdk deploy`` uses, so both paths deploy one definition (same construct IDs, same CloudFormation stack
names: a pipeline can take over stacks first deployed from a laptop). The only thing it adds is, when the
smoke test goes through the Kubernetes API, a small ``SmokeTest`` stack: the role the pipeline's smoke
test assumes and its EKS access entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from config import AppConfig
from stacks.cluster.stack import ClusterStack
from stacks.platform import build_app


@dataclass(frozen=True)
class SmokeAccess:
    """How the pipeline's smoke test reaches this stage.

    ``via``: ``endpoint`` (the NLB hostname) or ``kubernetes-api`` (the API server's service proxy, as a
    role of this stage that only principals of ``pipeline_account`` whose role names start with
    ``pipeline_name-`` may assume).
    """

    via: str
    pipeline_account: str
    pipeline_name: str


@dataclass(frozen=True)
class SmokeTestSpec:
    """What the pipeline's smoke-test step of this stage needs: outputs and plain environment."""

    outputs: Mapping[str, cdk.CfnOutput]
    env: Mapping[str, str]
    assume_role_arn: str | None = None


class LlamaStage(cdk.Stage):
    """The network, cluster, add-ons and inference stacks of one environment.

    ``config`` is that environment's ``AppConfig`` (its ``aws.account`` must be set: a pipeline deploys to
    explicit accounts); ``stacks`` are what ``build_app`` made of it. ``smoke`` (default None: no smoke
    test) says how the pipeline's smoke test reaches the service.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        smoke: SmokeAccess | None = None,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=cdk.Environment(account=config.aws.account, region=config.aws.region),
        )
        self.config = config
        self.stacks = build_app(self, config)
        self.smoke_test: SmokeTestSpec | None = self._smoke_test(smoke) if smoke is not None else None

    def _smoke_test(self, smoke: SmokeAccess) -> SmokeTestSpec | None:
        endpoint = endpoint_output(self.stacks)
        if endpoint is None:
            return None
        inference = self.config.inference
        if smoke.via == "endpoint":
            return SmokeTestSpec(outputs={"LLAMA_ENDPOINT": endpoint}, env={"LLAMA_SMOKE_VIA": "endpoint"})
        cluster_stack = getattr(self.stacks, "cluster", None)
        if not isinstance(cluster_stack, ClusterStack):
            return None
        cluster_name = cluster_stack.node.try_find_child("ClusterName")
        if not isinstance(cluster_name, cdk.CfnOutput):
            return None
        role_arn = self._smoke_access_stack(smoke, cluster_stack.cluster, inference.namespace)
        return SmokeTestSpec(
            outputs={"LLAMA_CLUSTER_NAME": cluster_name},
            env={
                "LLAMA_SMOKE_VIA": "kubernetes-api",
                "LLAMA_CLUSTER_REGION": self.config.aws.region,
                "LLAMA_SMOKE_ROLE_ARN": role_arn,
                "LLAMA_NAMESPACE": inference.namespace,
                "LLAMA_SERVICE": inference.service_name,
                "LLAMA_SERVICE_PORT": str(inference.exposure.port),
            },
            assume_role_arn=role_arn,
        )

    def _smoke_access_stack(self, smoke: SmokeAccess, cluster: eks.Cluster, namespace: str) -> str:
        """The ``SmokeTest`` stack: a role for the pipeline with namespace-scoped access to the cluster."""
        config = self.config
        stack = cdk.Stack(
            self,
            "SmokeTest",
            env=cdk.Environment(account=config.aws.account, region=config.aws.region),
            stack_name=f"{config.stack_prefix}-smoke-test",
            description=f"Access of pipeline {smoke.pipeline_name}'s smoke test to {config.cluster.name}",
        )
        role_name = f"{config.stack_prefix}-smoke-test"
        partition = cdk.Aws.PARTITION
        role = iam.Role(
            stack,
            "Role",
            role_name=role_name,
            description=f"Assumed by the post-deploy smoke test of pipeline {smoke.pipeline_name}",
            assumed_by=iam.AccountPrincipal(smoke.pipeline_account).with_conditions(
                {
                    "ArnLike": {
                        "aws:PrincipalArn": (
                            f"arn:{partition}:iam::{smoke.pipeline_account}:role/{smoke.pipeline_name}-*"
                        )
                    }
                }
            ),
            max_session_duration=cdk.Duration.hours(1),
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["eks:DescribeCluster"], resources=[cluster.cluster_arn])
        )
        # Edit in the service's namespace only: the API server's service proxy needs services/proxy
        # (create for POST), which the view policies do not grant.
        eks.AccessEntry(
            stack,
            "Access",
            cluster=cluster,
            principal=role.role_arn,
            access_policies=[
                eks.AccessPolicy.from_access_policy_name(
                    "AmazonEKSEditPolicy",
                    access_scope_type=eks.AccessScopeType.NAMESPACE,
                    namespaces=[namespace],
                )
            ],
        )
        return f"arn:{_partition(config.aws.region)}:iam::{config.aws.account}:role/{role_name}"


def _partition(region: str) -> str:
    return {"cn": "aws-cn", "us-gov": "aws-us-gov"}.get(region.rsplit("-", 2)[0], "aws")


def endpoint_output(stacks: Any) -> cdk.CfnOutput | None:
    """The inference stack's ``EndpointUrl`` CfnOutput (``http://`` or, with TLS, ``https://``), if this build
    has an inference stack."""
    inference = getattr(stacks, "inference", None)
    output = inference.node.try_find_child("EndpointUrl") if isinstance(inference, Construct) else None
    return output if isinstance(output, cdk.CfnOutput) else None
