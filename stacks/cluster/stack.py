"""ClusterStack: EKS control plane, node role and security group, managed add-ons, nodegroups."""

from __future__ import annotations

import datetime
from typing import Any

from aws_cdk import Annotations, CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from config import ClusterConfig, ComputeConfig, ConfigError, GpuCapacity
from stacks.cluster.control_plane import EksControlPlane
from stacks.cluster.managed_addons import ManagedAddons
from stacks.cluster.nodegroup import ManagedNodegroup
from stacks.cluster.nodes import NodeRole, NodeSecurityGroup
from stacks.cluster.secrets_key import SecretsKey

VERSION_WARNING_ID = "llama-eks:kubernetesVersionSupport"
NO_ADMIN_WARNING_ID = "llama-eks:noClusterAdmin"


class ClusterStack(Stack):
    """The EKS cluster in ``vpc``.

    Exposes typed objects for later stacks: ``cluster`` (``eks.Cluster``; its ``kubectl_provider`` runs
    manifests and Helm charts), ``node_security_group``, ``node_role``, ``secrets_key``,
    ``system_nodegroup`` and ``gpu_nodegroup`` (None unless ``compute.gpuCapacity`` is ``nodegroup``).

    ``today`` decides the Kubernetes support warning, and refuses a version past its extended support
    (EKS creates no cluster on it); injected so synth output is deterministic in tests.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        cluster_config: ClusterConfig,
        compute_config: ComputeConfig,
        today: datetime.date,
        **kwargs: Any,
    ) -> None:
        ended = cluster_config.version_info.ended_problem(today)
        if ended is not None:
            raise ConfigError("cluster.kubernetesVersion", cluster_config.kubernetes_version, ended)
        super().__init__(scope, construct_id, **kwargs)
        name = cluster_config.name
        self.secrets_key: kms.Key = SecretsKey(self, "SecretsKey", cluster_name=name).key
        control_plane = EksControlPlane(
            self, "ControlPlane", config=cluster_config, vpc=vpc, secrets_key=self.secrets_key
        )
        self.cluster: eks.Cluster = control_plane.cluster
        self.node_role: iam.Role = NodeRole(self, "NodeRole").role
        self.node_security_group: ec2.SecurityGroup = NodeSecurityGroup(
            self, "NodeSecurityGroup", cluster=self.cluster, cluster_name=name
        ).security_group

        addons = ManagedAddons(
            self, "ManagedAddons", cluster=self.cluster, names=cluster_config.managed_addons
        )
        self.managed_addons = addons.addons

        def nodegroup(construct_id: str, config: Any) -> ManagedNodegroup:
            ng = ManagedNodegroup(
                self,
                construct_id,
                cluster=self.cluster,
                config=config,
                kubernetes_version=cluster_config.kubernetes_version,
                node_role=self.node_role,
                node_security_group=self.node_security_group,
            )
            # Nodes join only once the CNI and kube-proxy run on them.
            for addon in addons.before_nodes():
                ng.node.add_dependency(addon)
            return ng

        self.system_nodegroup: eks.Nodegroup = nodegroup(
            "SystemNodegroup", compute_config.system_nodegroup
        ).nodegroup
        addons.after_nodes(self.system_nodegroup)

        self.gpu_nodegroup: eks.Nodegroup | None = None
        if compute_config.gpu_capacity is GpuCapacity.NODEGROUP:
            self.gpu_nodegroup = nodegroup("GpuNodegroup", compute_config.gpu_nodegroup).nodegroup

        # The Lambda functions of this stack (the kubectl handler: every manifest and chart it applied, and
        # the custom resources' functions) keep their logs as long as the control plane's, not CDK's 2 years.
        for child in self.node.find_all():
            if isinstance(child, logs.CfnLogGroup):
                child.retention_in_days = cluster_config.log_retention_days

        warning = cluster_config.version_info.support_warning(today)
        if warning:
            Annotations.of(self).add_warning_v2(VERSION_WARNING_ID, warning)
        if not cluster_config.admin_principal_arns:
            Annotations.of(self).add_warning_v2(
                NO_ADMIN_WARNING_ID,
                "cluster.adminPrincipalArns is empty: nobody can use kubectl on this cluster (the "
                "runbook's smoke test and the API-key Secret need it). Add your IAM role or user ARN, e.g. "
                "-c cluster.adminPrincipalArns=arn:aws:iam::123456789012:role/platform-admin (find yours "
                "with `aws sts get-caller-identity`; docs/runbook.md, 'kubectl access').",
            )

        CfnOutput(self, "ClusterName", value=self.cluster.cluster_name, description="EKS cluster name")
        CfnOutput(
            self,
            "ConfigCommand",
            value=f"aws eks update-kubeconfig --region {self.region} --name {self.cluster.cluster_name}",
            description="Point kubectl at the cluster",
        )
        CfnOutput(
            self,
            "ClusterSecurityGroupId",
            value=self.cluster.cluster_security_group_id,
            description="Security group EKS created for the control plane and managed nodes",
        )
        CfnOutput(
            self,
            "NodeSecurityGroupId",
            value=self.node_security_group.security_group_id,
            description="Security group of every node (tagged karpenter.sh/discovery)",
        )
