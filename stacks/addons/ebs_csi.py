"""Amazon EBS CSI driver (EKS managed add-on with Pod Identity) and the default StorageClass.

Prometheus keeps its data on a volume from here. Installed first and, on ``cdk destroy``, removed last:
the volumes of deleted claims (Prometheus's, once its StatefulSet goes with kube-prometheus-stack) are
deleted by this driver's controller, which must still run then.
"""

from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from charts.storage import EbsStorageClasses, StorageClassProps
from config.addons import AddonsConfig
from stacks.addons.contract import AddonContext, ClusterAddon
from stacks.addons.pod_identity import pod_identity_role
from stacks.common import acknowledge, managed_policy_finding

ADDON_NAME = "aws-ebs-csi-driver"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "ebs-csi-controller-sa"
#: AWS managed policy of the driver (path service-role/); the volumes use the account's EBS key (aws/ebs),
#: for which EC2 needs no extra KMS grant from this role.
POLICY = "service-role/AmazonEBSCSIDriverPolicy"


class EbsCsiDriverAddon(ClusterAddon):
    name = "ebsCsiDriver"

    def enabled(self, config: AddonsConfig) -> bool:
        return config.ebs_csi_driver.enabled

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        root = Construct(scope, "EbsCsiDriver")
        self.role = pod_identity_role(
            root, "Role", description=f"Amazon EBS CSI driver of EKS cluster {ctx.cluster_name}"
        )
        self.role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(POLICY))
        acknowledge(
            self.role,
            managed_policy_finding(POLICY),
            "the EBS CSI driver's AWS managed policy, as the EKS add-on documentation requires: AWS keeps "
            "it in step with the driver's EC2 volume, snapshot and attachment calls; creating and deleting "
            "volumes and snapshots is conditioned on the driver's own tags",
        )
        # EKS owns the association of a managed add-on (removed with it); at the version EKS defaults to
        # for the cluster's Kubernetes version.
        self.addon = eks.CfnAddon(
            root,
            "Addon",
            addon_name=ADDON_NAME,
            cluster_name=ctx.cluster.cluster_name,
            pod_identity_associations=[
                eks.CfnAddon.PodIdentityAssociationProperty(
                    role_arn=self.role.role_arn, service_account=SERVICE_ACCOUNT
                )
            ],
            resolve_conflicts="OVERWRITE",
            preserve_on_delete=False,
        )
        self.addon.node.add_dependency(self.role)
        agent = ctx.cluster.eks_pod_identity_agent
        if agent is not None:
            self.addon.node.add_dependency(agent)

        self.storage_chart = EbsStorageClasses(
            ctx.cdk8s_app, "EbsStorageClasses", props=StorageClassProps(cluster_name=ctx.cluster_name)
        )
        self.storage_classes = eks.KubernetesManifest(
            root, "StorageClass", cluster=ctx.cluster, manifest=self.storage_chart.to_json()
        )
        self.storage_classes.node.add_dependency(self.addon)
        return root
