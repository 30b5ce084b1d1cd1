"""The EKS control plane: native ``AWS::EKS::Cluster`` via ``aws_eks_v2``."""

from __future__ import annotations

import re

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.common import retention
from stacks.config import ClusterConfig, EndpointAccess

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
