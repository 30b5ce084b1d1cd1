"""What every node of the cluster shares: its IAM role and its security group."""

from __future__ import annotations

from aws_cdk import Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

#: AWS managed policies of the node role (EKS's documented minimum, plus SSM for shell access without SSH).
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
)


class NodeRole(Construct):
    """IAM role of the managed nodegroups' instances.

    EKS creates the ``EC2_LINUX`` access entry for a managed nodegroup's role itself: a Karpenter
    EC2NodeClass that reuses this role must not create a second access entry for it.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="EKS worker nodes: kubelet, VPC CNI, image pulls from ECR, SSM Session Manager",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(p) for p in NODE_MANAGED_POLICIES
            ],
        )


class NodeSecurityGroup(Construct):
    """Security group of every node, tagged ``karpenter.sh/discovery=<cluster name>``.

    Managed nodegroup nodes carry it next to the EKS cluster security group; Karpenter nodes discover it
    by tag. Rules: all traffic between nodes, and between nodes and the cluster security group (control
    plane to kubelet and webhooks, nodes to the API server).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster: eks.Cluster, cluster_name: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=cluster.vpc,
            description=f"EKS nodes of cluster {cluster_name}",
            allow_all_outbound=True,
        )
        sg = self.security_group
        sg.add_ingress_rule(sg, ec2.Port.all_traffic(), "Node to node (pods, DNS, overlay traffic)")
        sg.add_ingress_rule(
            cluster.cluster_security_group, ec2.Port.all_traffic(), "Control plane and managed nodes to nodes"
        )
        cluster.cluster_security_group.add_ingress_rule(
            sg, ec2.Port.all_traffic(), "Nodes to control plane and managed nodes"
        )
        Tags.of(sg).add("karpenter.sh/discovery", cluster_name)
