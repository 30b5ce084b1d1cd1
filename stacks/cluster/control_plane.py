"""The EKS control plane: native ``AWS::EKS::Cluster`` via ``aws_eks_v2``."""

from __future__ import annotations

import re

from aws_cdk import Arn, ArnComponents, ArnFormat, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import custom_resources as cr
from constructs import Construct

from config import ClusterConfig, EndpointAccess
from stacks.common import acknowledge, managed_policy_finding

_LOG_TYPES = {
    "api": eks.ClusterLoggingTypes.API,
    "audit": eks.ClusterLoggingTypes.AUDIT,
    "authenticator": eks.ClusterLoggingTypes.AUTHENTICATOR,
    "controllerManager": eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
    "scheduler": eks.ClusterLoggingTypes.SCHEDULER,
}


class EksControlPlane(Construct):
    """EKS cluster with access entries (API authentication mode), private (and optionally public)
    endpoint, control-plane logging, KMS envelope encryption of secrets and a kubectl handler.

    - Capacity: none here (``default_capacity=0``, type NODEGROUP, not Auto Mode); nodegroups are added
      by the stack. ``bootstrap_self_managed_addons`` is off: vpc-cni, kube-proxy and CoreDNS come as
      EKS managed add-ons instead.
    - Access: each of ``config.admin_principal_arns`` gets an ``AmazonEKSClusterAdminPolicy`` access
      entry, and the kubectl handler's role one of its own (aws_eks_v2). Nobody else: the creator-admin
      bootstrap is off, because the "creator" of a CloudFormation-made cluster is the CloudFormation
      execution role, which only cloudformation.amazonaws.com can assume.
    - ``config.private_access_cidrs`` may reach the private endpoint (HTTPS into the cluster security group).
    - The control-plane log group ``/aws/eks/<name>/cluster`` is EKS's (:class:`ControlPlaneLogGroup`).
    - The kubectl handler runs in the private subnets (private endpoint access is always on), with the
      kubectl layer matching ``config.kubernetes_version``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: ClusterConfig,
        vpc: ec2.IVpc,
        secrets_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = ControlPlaneLogGroup(
            self, "ControlPlaneLogs", cluster_name=config.name, retention_days=config.log_retention_days
        )
        if config.endpoint_access is EndpointAccess.PRIVATE:
            endpoint = eks.EndpointAccess.PRIVATE
        else:
            endpoint = eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*config.public_access_cidrs)
        version = config.version_info
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=config.name,
            version=eks.KubernetesVersion.of(version.version),
            vpc=vpc,
            vpc_subnets=[ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)],
            default_capacity=0,
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            bootstrap_cluster_creator_admin_permissions=False,
            bootstrap_self_managed_addons=False,
            endpoint_access=endpoint,
            cluster_logging=[_LOG_TYPES[t] for t in config.logging],
            secrets_encryption_key=secrets_key,
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=version.kubectl_layer(self, "KubectlLayer"),
            ),
            output_config_command=False,
        )
        self.cluster.node.add_dependency(self.log_group)
        # EKS uses the cluster role to encrypt/decrypt secrets' data keys; aws_eks_v2 does not grant it.
        # The policy must exist before the cluster: EKS checks key access when it creates the cluster.
        grant = secrets_key.grant(
            self.cluster.role, "kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:ListGrants"
        )
        grant.assert_success()
        cfn_cluster = self.cluster.node.default_child
        assert isinstance(cfn_cluster, eks.CfnCluster)
        cfn_cluster.node.add_dependency(self.cluster.role.node.find_child("DefaultPolicy"))
        # Not exposed by the L2: what happens after standard support, and whether the cluster can be deleted.
        cfn_cluster.upgrade_policy = eks.CfnCluster.UpgradePolicyProperty(
            support_type=config.support_type.upper()
        )
        cfn_cluster.deletion_protection = config.deletion_protection
        for cidr in config.private_access_cidrs:
            self.cluster.cluster_security_group.add_ingress_rule(
                ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), f"kubectl from {cidr} to the private API endpoint"
            )
        self._acknowledge_cdk_managed_findings()
        for arn in config.admin_principal_arns:
            self.cluster.grant_access(
                admin_entry_id(arn),
                arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )

    def _acknowledge_cdk_managed_findings(self) -> None:
        """cdk-nag findings on roles and functions aws-cdk-lib creates for the cluster (not ours to shape)."""
        acknowledge(
            self.cluster.role,
            managed_policy_finding("AmazonEKSClusterPolicy"),
            "the EKS cluster service role needs exactly this AWS-maintained policy (EKS documents it as the "
            "required policy; AWS updates it when EKS needs new EC2/ELB permissions)",
        )
        provider = self.cluster.kubectl_provider
        assert provider is not None  # kubectl_provider_options is always set above
        for policy, reason in {
            "service-role/AWSLambdaBasicExecutionRole": (
                "the kubectl handler and its provider framework write only their own CloudWatch logs"
            ),
            "service-role/AWSLambdaVPCAccessExecutionRole": (
                "the kubectl handler runs in the private subnets (private cluster endpoint) and must manage "
                "its ENIs there"
            ),
            "AmazonEC2ContainerRegistryReadOnly": (
                "the kubectl handler pulls Helm charts of the add-ons from ECR OCI registries, read-only"
            ),
        }.items():
            acknowledge(provider, managed_policy_finding(policy), reason)

        handler = provider.node.find_child("Handler")
        stack = Stack.of(self)
        condition_id = stack.get_logical_id(handler.node.find_child("HasEcrPublic"))  # type: ignore[arg-type]
        ecr_public = (
            '{"Fn::If":["' + condition_id + '",{"Fn::Join":["",["arn:",{"Ref":"AWS::Partition"},'
            '":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]},{"Ref":"AWS::NoValue"}]}'
        )
        acknowledge(
            provider,
            f"AwsSolutions-IAM4[Policy::{ecr_public}]",
            "in regions with ECR Public the kubectl handler pulls public Helm charts (e.g. Karpenter's) "
            "from public.ecr.aws, read-only",
        )
        handler_fn_id = stack.get_logical_id(handler.node.default_child)  # type: ignore[arg-type]
        acknowledge(
            provider,
            f"AwsSolutions-IAM5[Resource::<{handler_fn_id}.Arn>:*]",
            "the custom-resource provider framework may invoke any version of the kubectl handler, "
            "and only it",
        )
        acknowledge(
            handler,
            "AwsSolutions-L1",
            "aws-cdk-lib pins the kubectl handler's runtime to the one its bundled code is tested on; "
            "it moves with aws-cdk-lib upgrades, not with this app",
        )


def admin_entry_id(arn: str) -> str:
    """Construct ID of an admin principal's access entry: from its kind and name, not the list position
    (reordering the list must not replace entries): ``AdminRolePlatformAdmin``, ``AdminUserAlice``."""
    kind = "User" if ":user/" in arn else "Role"
    name = re.sub(r"[^A-Za-z0-9]", "", arn.rsplit("/", 1)[-1].title())
    return f"Admin{kind}{name}"


class ControlPlaneLogGroup(Construct):
    """The control-plane log group ``/aws/eks/<cluster name>/cluster``, owned by EKS, kept by the stack at
    ``retention_days``.

    EKS writes to exactly this name and creates the group itself when it is missing. A CloudFormation
    ``AWS::Logs::LogGroup`` of that name cannot survive deploy -> destroy -> deploy: retained, the next
    create fails because the group exists; deleted, EKS recreates it from the logs it still flushes while
    the cluster goes, with the same result, and the audit logs are gone. So no CloudFormation resource owns
    it: before the cluster exists a custom resource creates the group (``ResourceAlreadyExistsException``
    ignored: a redeploy reuses it) and sets its retention, on every create and update. On delete it does
    nothing: the group and its audit logs outlive the stack and expire with the retention.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster_name: str, retention_days: int
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group_name = f"/aws/eks/{cluster_name}/cluster"
        stack = Stack.of(self)
        arn = Arn.format(
            ArnComponents(
                service="logs",
                resource="log-group",
                resource_name=self.log_group_name,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            ),
            stack,
        )
        # IAM evaluates most CloudWatch Logs actions against the group's ARN with a trailing ":*".
        policy = cr.AwsCustomResourcePolicy.from_statements(
            [
                iam.PolicyStatement(
                    actions=["logs:CreateLogGroup", "logs:PutRetentionPolicy"], resources=[arn, f"{arn}:*"]
                )
            ]
        )
        name = cr.PhysicalResourceId.of(self.log_group_name)
        create = cr.AwsSdkCall(
            service="CloudWatchLogs",
            action="createLogGroup",
            parameters={"logGroupName": self.log_group_name},
            physical_resource_id=name,
            ignore_error_codes_matching="ResourceAlreadyExistsException",
        )
        self.create = cr.AwsCustomResource(
            self,
            "Create",
            resource_type="Custom::EksControlPlaneLogGroup",
            on_create=create,
            on_update=create,
            policy=policy,
            install_latest_aws_sdk=False,
        )
        put_retention = cr.AwsSdkCall(
            service="CloudWatchLogs",
            action="putRetentionPolicy",
            parameters={"logGroupName": self.log_group_name, "retentionInDays": retention_days},
            physical_resource_id=name,
        )
        self.retention = cr.AwsCustomResource(
            self,
            "Retention",
            resource_type="Custom::EksControlPlaneLogRetention",
            on_create=put_retention,
            on_update=put_retention,
            policy=policy,
            install_latest_aws_sdk=False,
        )
        self.retention.node.add_dependency(self.create)
        # Both calls run in AwsCustomResource's one function per stack (a SingletonFunction).
        provider = stack.node.find_child("AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", ""))
        acknowledge(
            provider,
            managed_policy_finding("service-role/AWSLambdaBasicExecutionRole"),
            "the SDK-call function of the control-plane log group's custom resources writes only its own "
            "CloudWatch logs; its two logs: actions are on the one log group (inline policy)",
        )
        acknowledge(
            self,
            f"AwsSolutions-IAM5[Resource::{_as_nag_renders(stack, f'{arn}:*')}]",
            "the trailing :* is how IAM names one log group for CloudWatch Logs actions; the statement "
            "covers exactly the control-plane log group of this cluster",
        )


def _as_nag_renders(stack: Stack, value: str) -> str:
    """``value`` as cdk-nag writes it in a finding id: pseudo parameters as ``<AWS::Name>``."""
    resolved = stack.resolve(value)
    if isinstance(resolved, str):
        return resolved
    parts = resolved["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else f"<{p['Ref']}>" for p in parts)
