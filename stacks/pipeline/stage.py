"""``LlamaStage``: one environment's stacks as a ``cdk.Stage``, for the pipeline to deploy.

The stage does not define the platform itself: it calls the same ``build_app`` (stacks/platform.py) that a
laptop ``cdk deploy`` uses, so both paths deploy one definition (same construct IDs, same CloudFormation stack
names: a pipeline can take over stacks first deployed from a laptop). The only thing it adds is, unless the
smoke test goes straight to an internet-facing endpoint, a small ``SmokeTest`` stack with the role the
pipeline's smoke test assumes and what that role may use: the in-VPC CodeBuild project (``vpc``), or an
EKS access entry scoped to the service's namespace (``kubernetes-api``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from config import AppConfig
from config.names import SEED_PREDICT_BODY
from stacks.cluster.stack import ClusterStack
from stacks.common import acknowledge, retention
from stacks.platform import build_app

#: The smoke script's folder: the in-VPC project's source (stdlib only; the seed request comes in its env).
SMOKE_SCRIPT_DIR = Path(__file__).resolve().parent / "codebuild"
#: CodeBuild image of the in-VPC project (the pipeline's steps use the same).
SMOKE_BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0


@dataclass(frozen=True)
class SmokeAccess:
    """How the pipeline's smoke test reaches this stage.

    ``via``: ``endpoint`` (the NLB hostname), ``vpc`` (this stage's CodeBuild project in the cluster VPC
    requests the NLB) or ``kubernetes-api`` (the API server's service proxy). ``vpc`` and
    ``kubernetes-api`` act as a role of this stage that only principals of ``pipeline_account`` whose role
    names start with ``pipeline_name-`` may assume. Timeouts and the API key secret are the pipeline's
    ``smokeTest`` settings (the in-VPC project runs with them).
    """

    via: str
    pipeline_account: str
    pipeline_name: str
    ready_timeout_s: int = 1200
    predict_timeout_s: int = 300
    api_key_secret_arn: str | None = None


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
        if smoke.via == "vpc":
            access = self._smoke_access_stack(smoke)
            project = InVpcSmokeTest(access.stack, "InVpc", smoke=smoke, cluster=cluster_stack.cluster)
            project.grant_start(access.role)
            return SmokeTestSpec(
                outputs={"LLAMA_ENDPOINT": endpoint},
                env={
                    "LLAMA_SMOKE_VIA": "vpc",
                    "LLAMA_CLUSTER_REGION": self.config.aws.region,
                    "LLAMA_SMOKE_ROLE_ARN": access.role_arn,
                    "LLAMA_SMOKE_PROJECT": project.project_name,
                },
                assume_role_arn=access.role_arn,
            )
        cluster_name = cluster_stack.node.try_find_child("ClusterName")
        if not isinstance(cluster_name, cdk.CfnOutput):
            return None
        access = self._smoke_access_stack(smoke)
        access.grant_namespace(cluster_stack.cluster, inference.namespace)
        role_arn = access.role_arn
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

    def _smoke_access_stack(self, smoke: SmokeAccess) -> SmokeTestAccess:
        """The ``SmokeTest`` stack with the role the pipeline's smoke test assumes."""
        config = self.config
        stack = cdk.Stack(
            self,
            "SmokeTest",
            env=cdk.Environment(account=config.aws.account, region=config.aws.region),
            stack_name=f"{config.stack_prefix}-smoke-test",
            description=f"Access of pipeline {smoke.pipeline_name}'s smoke test to {config.cluster.name}",
        )
        return SmokeTestAccess(stack, smoke=smoke, config=config)


class SmokeTestAccess:
    """The smoke-test role of a stage (fixed name ``<stack prefix>-smoke-test``, so the pipeline knows its
    ARN without a cross-stage reference), assumable only by the pipeline's roles; what it may do is
    granted by the mode that uses it."""

    def __init__(self, stack: cdk.Stack, *, smoke: SmokeAccess, config: AppConfig) -> None:
        self.stack = stack
        role_name = f"{config.stack_prefix}-smoke-test"
        partition = cdk.Aws.PARTITION
        self.role = iam.Role(
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
        self.role_arn = f"arn:{_partition(config.aws.region)}:iam::{config.aws.account}:role/{role_name}"

    def grant_namespace(self, cluster: eks.Cluster, namespace: str) -> None:
        """kubernetes-api mode: describe the cluster, and edit in the service's namespace only (the API
        server's service proxy needs services/proxy, create for POST, which the view policies lack)."""
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["eks:DescribeCluster"], resources=[cluster.cluster_arn])
        )
        eks.AccessEntry(
            self.stack,
            "Access",
            cluster=cluster,
            principal=self.role.role_arn,
            access_policies=[
                eks.AccessPolicy.from_access_policy_name(
                    "AmazonEKSEditPolicy",
                    access_scope_type=eks.AccessScopeType.NAMESPACE,
                    namespaces=[namespace],
                )
            ],
        )


class InVpcSmokeTest(Construct):
    """A CodeBuild project in the cluster VPC's private subnets that runs the smoke script in ``endpoint``
    mode against the NLB hostname the pipeline passes in ``LLAMA_ENDPOINT`` when it starts a build.

    It reaches what the pipeline's CodeBuild outside the VPC cannot: an internal NLB (it admits the VPC's
    CIDR) of a cluster whose API endpoint may be private. Its security group allows egress only (HTTP to
    the NLB, HTTPS to AWS APIs through the NAT gateway); it needs no cluster access at all. Source: the
    script's folder as an S3 asset; the seed request is in ``LLAMA_SEED_REQUEST``; the API key, when the
    service has one, comes from ``smoke.api_key_secret_arn`` (a secret of this account).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, smoke: SmokeAccess, cluster: eks.Cluster
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.project_name = f"{stack.stack_name}-in-vpc"
        source = s3_assets.Asset(self, "Script", path=str(SMOKE_SCRIPT_DIR), exclude=["__pycache__", "*.pyc"])
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=cluster.vpc,
            description=f"In-VPC smoke test of {stack.stack_name}: egress only (the NLB, AWS APIs)",
            allow_all_outbound=True,
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(30),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        env: dict[str, codebuild.BuildEnvironmentVariable] = {
            "LLAMA_SMOKE_VIA": codebuild.BuildEnvironmentVariable(value="endpoint"),
            "READY_TIMEOUT_S": codebuild.BuildEnvironmentVariable(value=str(smoke.ready_timeout_s)),
            "PREDICT_TIMEOUT_S": codebuild.BuildEnvironmentVariable(value=str(smoke.predict_timeout_s)),
            "LLAMA_SEED_REQUEST": codebuild.BuildEnvironmentVariable(value=SEED_PREDICT_BODY),
        }
        if smoke.api_key_secret_arn:
            env["LLAMA_API_KEY"] = codebuild.BuildEnvironmentVariable(
                type=codebuild.BuildEnvironmentVariableType.SECRETS_MANAGER, value=smoke.api_key_secret_arn
            )
        self.project = codebuild.Project(
            self,
            "Project",
            project_name=self.project_name,
            description="Post-deploy smoke test from inside the cluster VPC (started by the pipeline)",
            source=codebuild.Source.s3(bucket=source.bucket, path=source.s3_object_key),
            vpc=cluster.vpc,
            subnet_selection=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.security_group],
            environment=codebuild.BuildEnvironment(
                build_image=SMOKE_BUILD_IMAGE,
                compute_type=codebuild.ComputeType.SMALL,
                environment_variables=env,
            ),
            build_spec=codebuild.BuildSpec.from_object(
                {"version": "0.2", "phases": {"build": {"commands": ["python3 smoke.py"]}}}
            ),
            timeout=cdk.Duration.seconds(smoke.ready_timeout_s + smoke.predict_timeout_s + 300),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=self.log_group)
            ),
        )

        self._acknowledge(stack, smoke.api_key_secret_arn)

    def _acknowledge(self, stack: cdk.Stack, api_key_secret_arn: str | None) -> None:
        """cdk-nag findings on what codebuild.Project generates for a VPC project, with why each is right."""
        project = self.project
        acknowledge(
            project,
            "AwsSolutions-CB4",
            "the project has no artifacts and no cache; its only data is the smoke test's log (a /predict "
            "answer of the seed's prompt), and CodeBuild encrypts its build data with the AWS managed S3 key",
        )
        source = (
            "CodeBuild downloads its source, the smoke script's S3 asset: read-only actions on the CDK "
            "assets bucket and that one object (the statement's only resources)"
        )
        for action in ("s3:GetBucket*", "s3:GetObject*", "s3:List*"):
            acknowledge(project, f"AwsSolutions-IAM5[Action::{action}]", source)
        acknowledge(
            project,
            "AwsSolutions-IAM5[Resource::*]",
            "CodeBuild manages the build's network interface in the VPC: EC2 Describe* calls and ENI "
            "create/delete support no narrower resource (AWS documents this policy for VPC projects); "
            "granting the interface permission is conditioned on the private subnets",
        )
        acknowledge(
            project,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:"
            "network-interface/*]",
            "ec2:CreateNetworkInterfacePermission for the build's network interface, whose id is not known "
            "before the build; conditioned on the private subnets and the CodeBuild service",
        )
        if api_key_secret_arn:
            acknowledge(
                project,
                f"AwsSolutions-IAM5[Resource::{api_key_secret_arn}*]",
                "read access to the one secret pipeline.smokeTest.apiKeySecretArn names (the service's API "
                "key); CodeBuild's trailing wildcard matches the suffix Secrets Manager adds to secret names",
            )
        name = stack.resolve(stack.get_logical_id(project.node.default_child))
        own = (
            f"CodeBuild writes this project's logs and test reports under names it derives from the project "
            f"({name}); the wildcard covers that project's log streams and report groups only"
        )
        partition, region, account = _partition(stack.region), stack.region, stack.account
        acknowledge(
            project,
            f"AwsSolutions-IAM5[Resource::arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/"
            f"<{name}>:*]",
            own,
        )
        acknowledge(
            project,
            f"AwsSolutions-IAM5[Resource::arn:{partition}:codebuild:{region}:{account}:report-group/<{name}>-*]",
            own,
        )

    def grant_start(self, role: iam.IRole) -> None:
        """``role`` (the pipeline's smoke test) may start this project, read its builds and their log."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
                resources=[self.project.project_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["logs:GetLogEvents"], resources=[f"{self.log_group.log_group_arn}"])
        )


def _partition(region: str) -> str:
    return {"cn": "aws-cn", "us-gov": "aws-us-gov"}.get(region.rsplit("-", 2)[0], "aws")


def endpoint_output(stacks: Any) -> cdk.CfnOutput | None:
    """The inference stack's ``EndpointUrl`` CfnOutput (``http://`` or, with TLS, ``https://``), if this build
    has an inference stack."""
    inference = getattr(stacks, "inference", None)
    output = inference.node.try_find_child("EndpointUrl") if isinstance(inference, Construct) else None
    return output if isinstance(output, cdk.CfnOutput) else None
