"""Destroy-time cleanup: no GPU instance or load balancer of the cluster survives ``cdk destroy``.

The aws-eks-v2 kubectl handler only logs a ``kubectl delete`` that fails or times out, so when the NodePools'
deletion does not finish, the stack goes on to uninstall Karpenter while its GPU instances keep billing and
hold network interfaces that block the VPC's deletion. The same holds for the NLBs (and their target groups
and security groups) that the AWS Load Balancer Controller created for the cluster's Services.

``ClusterTeardown`` is a custom resource (Provider framework, Python handlers in ``lambda/teardown``) that
on Delete of the whole stack:

1. waits ``grace_period`` (default 10 min) for Karpenter (and the LB controller, where it still runs) to
   remove their own resources, and completes as soon as nothing of the cluster is left;
2. then terminates the instances Karpenter launched for THIS cluster (tags ``kubernetes.io/cluster/<name>
   =owned`` and ``karpenter.sh/nodepool``), deletes the load balancers and target groups the controller
   created for it (tag ``elbv2.k8s.aws/cluster=<name>``, in its VPC), revokes rules of other groups in
   the VPC that reference the controller's security groups, and deletes those groups;
3. completes once none of them is left (terminated instances only), or fails the Delete with the list of
   what is left at ``total_timeout`` minus two polls, so CloudFormation shows why.

Create and Update do nothing. A Delete that is not a whole-stack deletion (the resource removed or
replaced by an update, an update rolled back) does nothing either: the cluster lives on.

Timing: each poll is one short Lambda call (2 min timeout); the Provider framework's Step Functions waiter
polls every ``query_interval`` (30 s) for up to ``total_timeout`` (30 min), beyond one Lambda's 15 minutes
and below CloudFormation's one-hour limit for a custom resource (``ServiceTimeout`` is set to the total
timeout plus 5 min). 10 min of grace is plenty for Karpenter to drain and terminate nodes that run no
workload any more (the InferenceStack is deleted first); a pod that still blocks a drain (the NodePool
allows 1 h) does not hold up a destroy longer than that. The remaining 20 min cover termination of GPU
instances (minutes) and the release of NLB network interfaces (a few minutes after the NLB goes).

Ordering on destroy (see ``AddonsStack``): the InferenceStack depends on the AddonsStack, so the workload and
its Service are deleted before anything here. Within the AddonsStack, ``runs_after_deletion_of`` (the
NodePools) depend on this construct and are deleted before it runs; this construct depends on
``runs_before_deletion_of`` (Karpenter's controller release and its nodes' access entry), which are
deleted after it: Karpenter still runs while this step waits. The cluster and the VPC live in the
Cluster and Network stacks, which the AddonsStack depends on: they go after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Aws, CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct

from stacks.common import acknowledge, managed_policy_finding

HANDLER_DIR = Path(__file__).resolve().parent / "lambda" / "teardown"
RUNTIME = lambda_.Runtime.PYTHON_3_14
DEFAULT_GRACE_PERIOD = Duration.minutes(10)
DEFAULT_TOTAL_TIMEOUT = Duration.minutes(30)
DEFAULT_QUERY_INTERVAL = Duration.seconds(30)
#: Timeout of one poll (a few Describe calls and deletions); the waiter, not the Lambda, bounds the wait.
POLL_TIMEOUT = Duration.minutes(2)
#: CloudFormation waits at most one hour for a custom resource (``ServiceTimeout`` <= 3600 s).
MAX_TOTAL_TIMEOUT = Duration.minutes(55)
#: Time kept after the grace period to terminate instances and delete load balancers and security groups.
MIN_ACTION_TIME = Duration.minutes(10)

#: Tag keys this step selects by (what Karpenter 1.x and the AWS Load Balancer Controller put on them).
NODEPOOL_TAG = "karpenter.sh/nodepool"
LB_CLUSTER_TAG = "elbv2.k8s.aws/cluster"


class TeardownConfigError(ValueError):
    """A ``ClusterTeardown`` prop out of range; the message names the prop and the allowed range."""


class ClusterTeardown(Construct):
    """Destroy-time cleanup of ``cluster_name``'s Karpenter instances and load balancers (module docstring).

    ``cluster_name`` must be the literal name (IAM conditions embed it); ``vpc`` is the cluster's VPC.
    ``grace_period`` (default 10 min): how long the controllers get before this step acts.
    ``total_timeout`` (default 30 min, at most 55 min, at least grace + 10 min + two polls): the bound
    of the whole Delete. ``query_interval`` (default 30 s, 10 s to 2 min): time between polls.
    ``runs_after_deletion_of`` depend on this construct (deleted before it runs);
    ``runs_before_deletion_of`` are depended on (still there while it runs).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        vpc: ec2.IVpc,
        grace_period: Duration = DEFAULT_GRACE_PERIOD,
        total_timeout: Duration = DEFAULT_TOTAL_TIMEOUT,
        query_interval: Duration = DEFAULT_QUERY_INTERVAL,
        runs_after_deletion_of: Sequence[IConstruct] = (),
        runs_before_deletion_of: Sequence[IConstruct] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        give_up_after = _check_timing(grace_period, total_timeout, query_interval)
        stack = Stack.of(self)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            # What this step terminated or deleted outlives the stack: the audit trail of a destroy.
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.on_event_function = self._function(
            "OnEvent",
            "index.on_event",
            Duration.minutes(1),
            [iam.PolicyStatement(actions=["cloudformation:DescribeStacks"], resources=[stack.stack_id])],
        )
        self.is_complete_function = self._function(
            "IsComplete", "index.is_complete", POLL_TIMEOUT, _cleanup_statements(cluster_name, vpc.vpc_id)
        )

        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.on_event_function,
            is_complete_handler=self.is_complete_function,
            query_interval=query_interval,
            total_timeout=total_timeout,
            log_group=self.log_group,
        )
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.provider.service_token,
            resource_type="Custom::ClusterTeardown",
            properties={
                "ClusterName": cluster_name,
                "VpcId": vpc.vpc_id,
                "GracePeriodSeconds": str(int(grace_period.to_seconds())),
                "GiveUpAfterSeconds": str(give_up_after),
            },
            service_timeout=Duration.seconds(total_timeout.to_seconds() + 300),
        )
        for construct in runs_before_deletion_of:
            self.node.add_dependency(construct)
        for construct in runs_after_deletion_of:
            construct.node.add_dependency(self)
        self._acknowledge(stack)

    def _function(
        self, construct_id: str, handler: str, timeout: Duration, statements: list[iam.PolicyStatement]
    ) -> lambda_.Function:
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Destroy-time cleanup of the cluster's Karpenter instances and load balancers",
        )
        # Its own log group only (AWSLambdaBasicExecutionRole would allow any), plus the handler's actions.
        logs_statement = iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[self.log_group.log_group_arn]
        )
        policy = iam.ManagedPolicy(
            self,
            f"{construct_id}Policy",
            statements=[logs_statement, *statements],
            roles=[role],
            description=f"Destroy-time cleanup ({handler})",
        )
        function = lambda_.Function(
            self,
            construct_id,
            runtime=RUNTIME,
            handler=handler,
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__", "*.pyc"]),
            timeout=timeout,
            memory_size=256,
            role=role,
            log_group=self.log_group,
            description="Destroy-time cleanup of Karpenter instances and load balancers (teardown.py)",
        )
        function.node.add_dependency(policy)  # a policy attached to the role is no dependency by itself
        return function

    def _acknowledge(self, stack: Stack) -> None:
        """cdk-nag findings on what this construct and the Provider framework create, with the reasons."""
        cleanup_policy = self.node.find_child("IsCompletePolicy")
        acknowledge(
            cleanup_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "Describe calls of EC2 and ELBv2 support no resource-level permissions; every deleting action "
            "is conditioned on this cluster's tags (or, for revoking rules, on this cluster's VPC)",
        )
        for service, kind in (
            ("ec2", "instance"),
            ("ec2", "security-group"),
            ("elasticloadbalancing", "loadbalancer"),
            ("elasticloadbalancing", "targetgroup"),
        ):
            arn = f"arn:<AWS::Partition>:{service}:<AWS::Region>:<AWS::AccountId>:{kind}/*"
            acknowledge(
                cleanup_policy,
                f"AwsSolutions-IAM5[Resource::{arn}]",
                "the instances, load balancers, target groups and security groups the controllers created at "
                "runtime have no ARN at synth; the statement's conditions limit it to this cluster's "
                "resources (its tags, or its VPC for revoking rules)",
            )
        provider = self.provider
        acknowledge(
            provider,
            managed_policy_finding("service-role/AWSLambdaBasicExecutionRole"),
            "the custom-resource Provider framework's own functions write only their CloudWatch logs",
        )
        framework = [provider.node.find_child(f"framework-{n}") for n in ("isComplete", "onTimeout")]
        for function in [self.on_event_function, self.is_complete_function, *framework]:
            fn_id = stack.get_logical_id(function.node.default_child)  # type: ignore[arg-type]
            acknowledge(
                provider,
                f"AwsSolutions-IAM5[Resource::<{fn_id}.Arn>:*]",
                "the Provider framework (functions and waiter state machine) may invoke any version of this "
                "step's functions, and only them",
            )
        for rule, reason in _PROVIDER_FINDINGS.items():
            acknowledge(provider, rule, reason)
        for rule, reason in _FUNCTION_FINDINGS.items():
            acknowledge(self, rule, reason)
        acknowledge(
            self.log_group,
            "NIST.800.53.R5-CloudWatchLogGroupEncrypted",
            "the log holds instance ids and load balancer ARNs only, no data or secrets; CloudWatch Logs "
            "encrypts it at rest with a service key, a customer key would outlive the stack for nothing",
        )


#: Findings on the Provider framework's functions, roles and waiter state machine (aws-cdk-lib's shape).
_PROVIDER_FINDINGS = {
    "AwsSolutions-L1": (
        "aws-cdk-lib pins the Provider framework's runtime to the one its bundled code is tested on; it "
        "moves with aws-cdk-lib upgrades, not with this app"
    ),
    "AwsSolutions-SF1": (
        "the waiter state machine only re-invokes the poll, and each poll logs what it saw and did to this "
        "step's log group; execution logging would add log-delivery permissions on every resource"
    ),
    "AwsSolutions-SF2": (
        "the waiter state machine is one retried Lambda task that runs once per stack deletion; X-Ray "
        "traces would show nothing the poll's own log does not"
    ),
    "NIST.800.53.R5-IAMNoInlinePolicy": (
        "aws-cdk-lib's Provider framework grants its functions and its waiter state machine with inline "
        "policies (this step's own roles use managed policies)"
    ),
}
#: Findings on every function of this step (its two handlers and the framework's three).
_FUNCTION_FINDINGS = {
    "NIST.800.53.R5-LambdaConcurrency": (
        "the functions run only while the stack is deleted, one poll at a time; reserved concurrency would "
        "take from the account pool and can fail deploys in accounts with a low concurrency limit"
    ),
    "NIST.800.53.R5-LambdaDLQ": (
        "the Provider framework invokes every function synchronously and reports failures to "
        "CloudFormation; a dead-letter queue applies to asynchronous invocations only"
    ),
    "NIST.800.53.R5-LambdaInsideVPC": (
        "the functions call only regional AWS APIs; in the VPC their network interfaces would outlive them "
        "for minutes and block the deletion of the VPC they are meant to clear"
    ),
}


def _check_timing(grace_period: Duration, total_timeout: Duration, query_interval: Duration) -> int:
    """Validate the timing props; return the give-up deadline (seconds after the Delete began)."""
    grace, total, interval = (
        int(grace_period.to_seconds()),
        int(total_timeout.to_seconds()),
        int(query_interval.to_seconds()),
    )
    if not 10 <= interval <= 120:
        raise TeardownConfigError(f"ClusterTeardown query_interval: {interval} s; allowed: 10 s to 120 s")
    max_total, action = int(MAX_TOTAL_TIMEOUT.to_seconds()), int(MIN_ACTION_TIME.to_seconds())
    if total > max_total:
        raise TeardownConfigError(
            f"ClusterTeardown total_timeout: {total} s; allowed: at most {max_total} s "
            "(CloudFormation waits one hour for a custom resource)"
        )
    give_up_after = total - 2 * interval
    if grace < 0 or give_up_after < grace + action:
        raise TeardownConfigError(
            f"ClusterTeardown grace_period: {grace} s with total_timeout {total} s; allowed: grace_period "
            f">= 0 and total_timeout >= grace_period + {action} s + 2 x query_interval "
            f"(= {grace + action + 2 * interval} s)"
        )
    return give_up_after


def _cleanup_statements(cluster_name: str, vpc_id: str) -> list[iam.PolicyStatement]:
    """Least privilege of the polling handler: describe anything, delete only this cluster's resources."""

    def arn(service: str, resource: str) -> str:
        return f"arn:{Aws.PARTITION}:{service}:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"

    lb_cluster = {"StringEquals": {f"aws:ResourceTag/{LB_CLUSTER_TAG}": cluster_name}}
    return [
        iam.PolicyStatement(
            sid="Describe",
            actions=[
                "ec2:DescribeInstances",
                "ec2:DescribeSecurityGroups",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTags",
            ],
            resources=["*"],
        ),
        # Karpenter's own deletion condition (official template, AllowScopedDeletion).
        iam.PolicyStatement(
            sid="TerminateKarpenterInstancesOfThisCluster",
            actions=["ec2:TerminateInstances"],
            resources=[arn("ec2", "instance/*")],
            conditions={
                "StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"},
                "StringLike": {f"aws:ResourceTag/{NODEPOOL_TAG}": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="DeleteLoadBalancersOfThisCluster",
            actions=["elasticloadbalancing:DeleteLoadBalancer"],
            resources=[arn("elasticloadbalancing", "loadbalancer/*")],
            conditions=lb_cluster,
        ),
        iam.PolicyStatement(
            sid="DeleteTargetGroupsOfThisCluster",
            actions=["elasticloadbalancing:DeleteTargetGroup"],
            resources=[arn("elasticloadbalancing", "targetgroup/*")],
            conditions=lb_cluster,
        ),
        iam.PolicyStatement(
            sid="DeleteSecurityGroupsOfThisCluster",
            actions=["ec2:DeleteSecurityGroup"],
            resources=[arn("ec2", "security-group/*")],
            conditions=lb_cluster,
        ),
        # The nodes' groups allow traffic from the controller's backend group: those rules must go first.
        iam.PolicyStatement(
            sid="RevokeRulesInThisVpc",
            actions=["ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"],
            resources=[arn("ec2", "security-group/*")],
            conditions={"ArnEquals": {"ec2:Vpc": arn("ec2", f"vpc/{vpc_id}")}},
        ),
    ]
