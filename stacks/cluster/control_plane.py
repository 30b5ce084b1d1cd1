"""The EKS control plane: native ``AWS::EKS::Cluster`` via ``aws_eks_v2``."""

from __future__ import annotations

import re

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from config import ClusterConfig, EndpointAccess
from stacks.common import acknowledge, managed_policy_finding, retention

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
    - Access: the identity that deploys gets cluster admin (creator admin); each of
      ``config.admin_role_arns`` gets an ``AmazonEKSClusterAdminPolicy`` access entry.
    - The control-plane log group ``/aws/eks/<name>/cluster`` is created up front with a retention
      (EKS would create it without one) and retained on deletion (audit logs).
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
        self.log_group = logs.LogGroup(
            self,
            "ControlPlaneLogs",
            log_group_name=f"/aws/eks/{config.name}/cluster",
            retention=retention(config.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN,
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
            bootstrap_cluster_creator_admin_permissions=True,
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
        self._acknowledge_cdk_managed_findings()
        for arn in config.admin_role_arns:
            # ID from the role name (not the list position): reordering the list must not replace entries.
            role_name = re.sub(r"[^A-Za-z0-9]", "", arn.rsplit("/", 1)[-1].title())
            self.cluster.grant_access(
                f"AdminRole{role_name}",
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
