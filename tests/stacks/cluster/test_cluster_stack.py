"""ClusterStack: control plane, access, logging, encryption, nodes, add-ons — from the session's one synth.

cdk-nag's EKS1 (public endpoint) and EKS2 (control-plane logging) only inspect the old aws_eks
custom-resource cluster, not the native AWS::EKS::Cluster of aws_eks_v2: the endpoint and logging
assertions here stand in for them.
"""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import aws_eks_v2 as eks
from aws_cdk.assertions import Match, Template

from config import GpuCapacity
from tests.conftest import Synthesized

CLUSTER = "ControlPlaneCluster8AFA2E51"
KEY = "SecretsKey0D2EC683"
SYSTEM_NG = "SystemNodegroup1FE9048B"
GPU_NG = "GpuNodegroupA54E93BD"
NODE_SG = "NodeSecurityGroup0D0A68ED"
NODE_ROLE = "NodeRole52753DAC"
CONTROL_PLANE_LOGS = "ControlPlaneControlPlaneLogs126A6FFB"


@pytest.fixture(scope="module")
def template(synthesized: Synthesized) -> Template:
    return Template.from_json(synthesized.template("Cluster"))


@pytest.fixture(scope="module")
def resources(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.template("Cluster")["Resources"]


@pytest.fixture(scope="module")
def gpu_resources(variant: Synthesized) -> dict[str, Any]:
    """Cluster resources of the variant, which sets compute.gpuCapacity=nodegroup explicitly."""
    return variant.template("Cluster")["Resources"]


def test_stateful_logical_ids_are_pinned(resources: dict[str, Any]) -> None:
    # A changed logical id replaces the resource: a new cluster, a new key (old secrets unreadable),
    # new nodes. Rename constructs only with a migration plan.
    assert resources[CLUSTER]["Type"] == "AWS::EKS::Cluster"
    assert resources[KEY]["Type"] == "AWS::KMS::Key"
    assert resources[SYSTEM_NG]["Type"] == "AWS::EKS::Nodegroup"
    assert resources[NODE_SG]["Type"] == "AWS::EC2::SecurityGroup"
    assert resources[NODE_ROLE]["Type"] == "AWS::IAM::Role"
    assert resources[CONTROL_PLANE_LOGS]["Type"] == "AWS::Logs::LogGroup"


def test_native_cluster_version_name_and_no_auto_mode(resources: dict[str, Any]) -> None:
    props = resources[CLUSTER]["Properties"]
    assert props["Name"] == "llama-eks-dev"
    assert props["Version"] == "1.35"
    assert props["ComputeConfig"] == {"Enabled": False}
    assert props["BootstrapSelfManagedAddons"] is False
    assert props["KubernetesNetworkConfig"]["ElasticLoadBalancing"] == {"Enabled": False}


def test_upgrade_policy_and_deletion_protection_default(resources: dict[str, Any]) -> None:
    props = resources[CLUSTER]["Properties"]
    assert props["UpgradePolicy"] == {"SupportType": "EXTENDED"}
    assert props["DeletionProtection"] is False


def test_authentication_by_access_entries_with_creator_admin(resources: dict[str, Any]) -> None:
    assert resources[CLUSTER]["Properties"]["AccessConfig"] == {
        "AuthenticationMode": "API",
        "BootstrapClusterCreatorAdminPermissions": True,
    }


def test_kubectl_handler_has_the_only_extra_access_entry_in_dev(template: Template) -> None:
    entries = template.find_resources("AWS::EKS::AccessEntry")
    assert len(entries) == 1
    (entry,) = entries.values()
    assert entry["Properties"]["PrincipalArn"] == {
        "Fn::GetAtt": [Match.string_like_regexp("KubectlProviderHandlerServiceRole"), "Arn"]
    } or "KubectlProviderHandlerServiceRole" in str(entry["Properties"]["PrincipalArn"])
    assert entry["Properties"]["AccessPolicies"][0]["AccessScope"] == {"Type": "cluster"}
    assert "AmazonEKSClusterAdminPolicy" in str(entry["Properties"]["AccessPolicies"][0]["PolicyArn"])


def test_endpoint_public_and_private_from_configured_cidrs(resources: dict[str, Any]) -> None:
    vpc_config = resources[CLUSTER]["Properties"]["ResourcesVpcConfig"]
    assert vpc_config["EndpointPrivateAccess"] is True
    assert vpc_config["EndpointPublicAccess"] is True
    assert vpc_config["PublicAccessCidrs"] == ["0.0.0.0/0"]


def test_control_plane_in_private_subnets_only(resources: dict[str, Any]) -> None:
    subnet_refs = str(resources[CLUSTER]["Properties"]["ResourcesVpcConfig"]["SubnetIds"])
    assert subnet_refs.count("PrivateSubnet") == 3
    assert "PublicSubnet" not in subnet_refs


def test_all_control_plane_log_types_enabled(resources: dict[str, Any]) -> None:
    assert resources[CLUSTER]["Properties"]["Logging"] == {
        "ClusterLogging": {
            "EnabledTypes": [
                {"Type": "api"},
                {"Type": "audit"},
                {"Type": "authenticator"},
                {"Type": "controllerManager"},
                {"Type": "scheduler"},
            ]
        }
    }


def test_control_plane_log_group_precreated_with_retention_and_retained(resources: dict[str, Any]) -> None:
    log_group = resources[CONTROL_PLANE_LOGS]
    assert log_group["Properties"]["LogGroupName"] == "/aws/eks/llama-eks-dev/cluster"
    assert log_group["Properties"]["RetentionInDays"] == 90
    assert log_group["DeletionPolicy"] == "Retain"
    assert CONTROL_PLANE_LOGS in resources[CLUSTER]["DependsOn"]


def test_secrets_encrypted_with_rotating_retained_key(resources: dict[str, Any]) -> None:
    assert resources[CLUSTER]["Properties"]["EncryptionConfig"] == [
        {"Provider": {"KeyArn": {"Fn::GetAtt": [KEY, "Arn"]}}, "Resources": ["secrets"]}
    ]
    key = resources[KEY]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["Properties"]["PendingWindowInDays"] == 30
    assert key["DeletionPolicy"] == "Retain" and key["UpdateReplacePolicy"] == "Retain"


def test_cluster_role_may_use_the_key_before_the_cluster_exists(resources: dict[str, Any]) -> None:
    policies = {
        k: v
        for k, v in resources.items()
        if v["Type"] == "AWS::IAM::Policy" and k.startswith("ControlPlaneClusterRoleDefaultPolicy")
    }
    ((policy_id, policy),) = policies.items()
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [
        {
            "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:ListGrants"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [KEY, "Arn"]},
        }
    ]
    assert policy_id in resources[CLUSTER]["DependsOn"]


def test_key_alias(template: Template) -> None:
    template.has_resource_properties(
        "AWS::KMS::Alias",
        {"AliasName": "alias/llama-eks-dev/eks-secrets", "TargetKeyId": {"Fn::GetAtt": [KEY, "Arn"]}},
    )


def test_system_nodegroup_matches_seed(resources: dict[str, Any]) -> None:
    props = resources[SYSTEM_NG]["Properties"]
    assert props["NodegroupName"] == "eks-mng"
    assert props["AmiType"] == "AL2023_x86_64_STANDARD"
    assert props["CapacityType"] == "ON_DEMAND"
    assert props["InstanceTypes"] == ["m5.large", "m6i.large", "m6a.large", "m7i.large", "m7a.large"]
    assert props["ScalingConfig"] == {"MinSize": 2, "DesiredSize": 2, "MaxSize": 3}
    assert props["Labels"] == {"llama-eks/node-class": "system"}
    assert props.get("Taints", []) == []
    assert props["NodeRole"] == {"Fn::GetAtt": [NODE_ROLE, "Arn"]}
    assert "DiskSize" not in props  # set in the launch template
    assert str(props["Subnets"]).count("PrivateSubnet") == 3


def test_gpu_nodegroup_exactly_when_configured(synthesized: Synthesized, resources: dict[str, Any]) -> None:
    has_gpu_ng = synthesized.config.compute.gpu_capacity is GpuCapacity.NODEGROUP
    assert (GPU_NG in resources) is has_gpu_ng
    assert (synthesized.stacks.cluster.gpu_nodegroup is not None) is has_gpu_ng


def test_gpu_nodegroup_matches_seed_chapter_5(gpu_resources: dict[str, Any]) -> None:
    assert gpu_resources[GPU_NG]["Type"] == "AWS::EKS::Nodegroup"  # logical id pinned
    props = gpu_resources[GPU_NG]["Properties"]
    assert props["NodegroupName"] == "eks-gpu-mng"
    assert props["AmiType"] == "AL2023_x86_64_NVIDIA"
    assert props["CapacityType"] == "SPOT"
    assert props["InstanceTypes"] == ["g6.2xlarge"]
    # Seed ch5's 0/1/2, with the variant's desiredSize 2: env=prod runs two replicas, one GPU node each.
    assert props["ScalingConfig"] == {"MinSize": 0, "DesiredSize": 2, "MaxSize": 2}
    assert props["Taints"] == [{"Effect": "NO_SCHEDULE", "Key": "nvidia.com/gpu", "Value": "true"}]
    assert props["Labels"] == {"llama-eks/node-class": "gpu"}


@pytest.mark.parametrize(("nodegroup", "disk"), [(SYSTEM_NG, 50), (GPU_NG, 100)])
def test_launch_templates_require_imdsv2_and_encrypt_root_volume(
    resources: dict[str, Any], gpu_resources: dict[str, Any], nodegroup: str, disk: int
) -> None:
    if nodegroup == GPU_NG:
        resources = gpu_resources
    lt_ref = resources[nodegroup]["Properties"]["LaunchTemplate"]
    lt = resources[lt_ref["Id"]["Ref"]]["Properties"]["LaunchTemplateData"]
    assert lt["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    assert lt["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {"DeleteOnTermination": True, "Encrypted": True, "VolumeSize": disk, "VolumeType": "gp3"},
        }
    ]
    assert lt["SecurityGroupIds"] == [
        {"Fn::GetAtt": [NODE_SG, "GroupId"]},
        {"Fn::GetAtt": [CLUSTER, "ClusterSecurityGroupId"]},
    ]
    assert "ImageId" not in lt and "UserData" not in lt  # AMI from the nodegroup's amiType


def test_node_security_group_tagged_for_karpenter_with_rules(
    resources: dict[str, Any], template: Template
) -> None:
    tags = {t["Key"]: t["Value"] for t in resources[NODE_SG]["Properties"]["Tags"]}
    assert tags["karpenter.sh/discovery"] == "llama-eks-dev"
    ingress = [r["Properties"] for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()]
    pairs = {(str(r["GroupId"]), str(r["SourceSecurityGroupId"]), r["IpProtocol"]) for r in ingress}
    node = str({"Fn::GetAtt": [NODE_SG, "GroupId"]})
    cluster_sg = str({"Fn::GetAtt": [CLUSTER, "ClusterSecurityGroupId"]})
    assert pairs == {(node, node, "-1"), (node, cluster_sg, "-1"), (cluster_sg, node, "-1")}


def test_node_role_policies(resources: dict[str, Any]) -> None:
    policies = str(resources[NODE_ROLE]["Properties"]["ManagedPolicyArns"])
    for name in (
        "AmazonEKSWorkerNodePolicy",
        "AmazonEKS_CNI_Policy",
        "AmazonEC2ContainerRegistryReadOnly",
        "AmazonSSMManagedInstanceCore",
    ):
        assert f"policy/{name}" in policies
    assert "ec2.amazonaws.com" in str(resources[NODE_ROLE]["Properties"]["AssumeRolePolicyDocument"])


def test_managed_addons_and_their_order(resources: dict[str, Any]) -> None:
    addons = {
        v["Properties"]["AddonName"]: (k, v) for k, v in resources.items() if v["Type"] == "AWS::EKS::Addon"
    }
    assert sorted(addons) == ["coredns", "eks-pod-identity-agent", "kube-proxy", "metrics-server", "vpc-cni"]
    # Nodes need CNI, kube-proxy (and the pod identity agent) first ...
    lt_id = resources[SYSTEM_NG]["Properties"]["LaunchTemplate"]["Id"]["Ref"]
    for name in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert addons[name][0] in resources[SYSTEM_NG]["DependsOn"]
        assert addons[name][0] in resources[lt_id]["DependsOn"]
    # ... CoreDNS and metrics-server need nodes to run on.
    for name in ("coredns", "metrics-server"):
        assert SYSTEM_NG in addons[name][1]["DependsOn"]


def test_gpu_nodegroup_waits_for_node_addons(gpu_resources: dict[str, Any]) -> None:
    addons = {
        v["Properties"]["AddonName"]: k for k, v in gpu_resources.items() if v["Type"] == "AWS::EKS::Addon"
    }
    for name in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert addons[name] in gpu_resources[GPU_NG]["DependsOn"]


def test_kubectl_layer_matches_cluster_version(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::LayerVersion", {"Description": Match.string_like_regexp(r"kubectl 1\.35\.")}
    )


def test_kubectl_handler_runs_in_private_subnets(template: Template) -> None:
    handler = template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Description": "onEvent handler for EKS kubectl resource provider"}},
    )
    (fn,) = handler.values()
    assert str(fn["Properties"]["VpcConfig"]["SubnetIds"]).count("PrivateSubnet") == 3


def test_outputs(synthesized: Synthesized, template: Template) -> None:
    template.has_output("ClusterName", {"Value": {"Ref": CLUSTER}})
    template.has_output(
        "ConfigCommand",
        {
            "Value": {
                "Fn::Join": ["", ["aws eks update-kubeconfig --region us-west-2 --name ", {"Ref": CLUSTER}]]
            }
        },
    )
    template.has_output("NodeSecurityGroupId", {"Value": {"Fn::GetAtt": [NODE_SG, "GroupId"]}})


def test_no_support_warning_for_default_version(synthesized: Synthesized) -> None:
    assert not [m for m in synthesized.messages("Cluster") if "kubernetesVersionSupport" in str(m)]


def test_typed_objects_for_later_stacks(synthesized: Synthesized) -> None:
    stack = synthesized.stacks.cluster
    assert isinstance(stack.cluster, eks.Cluster)
    assert stack.cluster.kubectl_provider is not None
    assert stack.system_nodegroup is not None
    assert stack.cluster.vpc is synthesized.stacks.network.vpc
    assert stack.stack_name == "llama-eks-dev-cluster"
    assert synthesized.stacks.network in stack.dependencies
