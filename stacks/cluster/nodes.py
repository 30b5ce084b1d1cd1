"""What every node of the cluster shares: its IAM role and its security group."""

from __future__ import annotations

from aws_cdk import Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.common import acknowledge, managed_policy_finding

#: AWS managed policies of the node role (EKS's documented minimum, plus SSM for shell access without SSH),
#: each with the reason it is acknowledged for cdk-nag AwsSolutions-IAM4.
NODE_MANAGED_POLICIES = {
    "AmazonEKSWorkerNodePolicy": (
        "kubelet on every node must describe the cluster and register the node; EKS documents this "
        "AWS-maintained policy as required for managed nodegroup node roles"
    ),
    "AmazonEKS_CNI_Policy": (
        "the vpc-cni managed add-on (aws-node, host network) assigns pod IPs from the private subnets with "
        "the node role; AWS keeps the policy in step with the CNI's ENI calls"
    ),
    "AmazonEC2ContainerRegistryReadOnly": (
        "nodes pull the model-server image and EKS add-on images from ECR; read-only, no push"
    ),
    "AmazonSSMManagedInstanceCore": (
        "operators reach nodes through SSM Session Manager (audited, no SSH keys or open port 22); the "
        "nodegroups have no remote access configured"
    ),
}


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
        for policy, reason in NODE_MANAGED_POLICIES.items():
            acknowledge(self.role, managed_policy_finding(policy), reason)


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
