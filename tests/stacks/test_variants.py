"""The second configuration (tests/stacks/conftest.py VARIANT): prod (production: private endpoint by
default), admin roles, a Kubernetes version in extended support (support warning), one NAT gateway per AZ,
interface endpoints, partial logging, Bottlerocket system nodes."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.conftest import Synthesized
from tests.helpers.cfn import AWS_SOLUTIONS, cfn_lint, unacknowledged
from tests.stacks.conftest import ADMINS, VARIANT


def _cluster(variant: Synthesized) -> dict[str, Any]:
    resources = variant.template("Cluster")["Resources"]
    return next(v for v in resources.values() if v["Type"] == "AWS::EKS::Cluster")


def test_private_endpoint_only_by_default_in_prod(variant: Synthesized) -> None:
    assert variant.config.production is True
    assert "cluster.endpointAccess" not in VARIANT  # the production default
    vpc_config = _cluster(variant)["Properties"]["ResourcesVpcConfig"]
    assert vpc_config["EndpointPrivateAccess"] is True
    assert vpc_config["EndpointPublicAccess"] is False
    assert "PublicAccessCidrs" not in vpc_config


def test_kubectl_handler_inside_vpc_for_private_cluster(variant: Synthesized) -> None:
    template = Template.from_json(variant.template("Cluster"))
    (fn,) = template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Description": "onEvent handler for EKS kubectl resource provider"}},
    ).values()
    assert str(fn["Properties"]["VpcConfig"]["SubnetIds"]).count("PrivateSubnet") == 3
    assert fn["Properties"]["VpcConfig"]["SecurityGroupIds"]


def test_admin_principal_access_entries(variant: Synthesized) -> None:
    template = Template.from_json(variant.template("Cluster"))
    for arn in ADMINS:  # roles (with and without a path, an SSO role among them) and a user
        template.has_resource_properties(
            "AWS::EKS::AccessEntry",
            {
                "PrincipalArn": arn,
                "AccessPolicies": [
                    {
                        "AccessScope": {"Type": "cluster"},
                        "PolicyArn": Match.object_like(
                            {
                                "Fn::Join": [
                                    "",
                                    [
                                        "arn:",
                                        {"Ref": "AWS::Partition"},
                                        ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                                    ],
                                ]
                            }
                        ),
                    }
                ],
            },
        )
    # logical ids follow the role name, not the list position
    ids = [
        k for k, v in variant.template("Cluster")["Resources"].items() if v["Type"] == "AWS::EKS::AccessEntry"
    ]
    assert any(k.startswith("ControlPlaneClusterAdminRolePlatformAdmin") for k in ids)
    assert any(k.startswith("ControlPlaneClusterAdminRoleBreakGlass") for k in ids)
    assert any(k.startswith("ControlPlaneClusterAdminRoleAwsreservedssoAdministratoraccess") for k in ids)
    assert any(k.startswith("ControlPlaneClusterAdminUserAlice") for k in ids)
    # the four admins and the kubectl handler, nobody else
    assert len(ids) == 5


def test_partial_logging(variant: Synthesized) -> None:
    assert _cluster(variant)["Properties"]["Logging"] == {
        "ClusterLogging": {"EnabledTypes": [{"Type": "api"}, {"Type": "audit"}]}
    }


def test_old_version_uses_its_kubectl_layer_and_warns(variant: Synthesized) -> None:
    assert _cluster(variant)["Properties"]["Version"] == "1.32"
    Template.from_json(variant.template("Cluster")).has_resource_properties(
        "AWS::Lambda::LayerVersion", {"Description": Match.string_like_regexp(r"kubectl 1\.32\.")}
    )
    warnings = [text for level, text in variant.messages("Cluster") if "warning" in level.lower()]
    expected = (
        "Kubernetes 1.32 is past the end of EKS standard support (2026-03-23); extended support (6 times the "
        "standard control plane price per cluster hour) ends 2027-03-23. Upgrade cluster.kubernetesVersion "
        "one minor version at a time (default: 1.35)."
    )
    assert any(expected in str(w) for w in warnings), warnings
    # admins are configured: no "nobody can use kubectl" warning
    assert not [w for w in warnings if "adminPrincipalArns" in str(w)]


def test_prod_network(variant: Synthesized) -> None:
    template = Template.from_json(variant.template("Network"))
    template.resource_count_is("AWS::EC2::NatGateway", 3)
    endpoints = template.find_resources(
        "AWS::EC2::VPCEndpoint", {"Properties": {"VpcEndpointType": "Interface"}}
    )
    services = sorted(str(e["Properties"]["ServiceName"]) for e in endpoints.values())
    assert len(services) == 5
    for suffix in (".ec2", ".ecr.api", ".ecr.dkr", ".sqs", ".sts"):
        assert any(s.endswith(suffix) or f"{suffix}" in s for s in services), (suffix, services)
    for e in endpoints.values():
        assert e["Properties"]["PrivateDnsEnabled"] is True
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 365})


def test_bottlerocket_data_volume_gets_the_disk_size(variant: Synthesized) -> None:
    resources = variant.template("Cluster")["Resources"]
    ng = next(
        v
        for v in resources.values()
        if v["Type"] == "AWS::EKS::Nodegroup" and v["Properties"]["NodegroupName"] == "eks-mng"
    )
    assert ng["Properties"]["AmiType"] == "BOTTLEROCKET_x86_64"
    lt = resources[ng["Properties"]["LaunchTemplate"]["Id"]["Ref"]]["Properties"]["LaunchTemplateData"]
    assert lt["BlockDeviceMappings"][0]["DeviceName"] == "/dev/xvdb"
    assert lt["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 50


def test_prod_cluster_is_deletion_protected(variant: Synthesized) -> None:
    assert _cluster(variant)["Properties"]["DeletionProtection"] is True


def test_names_carry_the_environment(variant: Synthesized) -> None:
    assert variant.stacks.cluster.stack_name == "llama-eks-prod-cluster"
    assert _cluster(variant)["Properties"]["Name"] == "llama-eks-prod"


@pytest.mark.parametrize("stack_id", ["Network", "Cluster"])
def test_variant_cfn_lint_clean(variant: Synthesized, stack_id: str) -> None:
    assert cfn_lint(variant.template(stack_id)) == []


def test_variant_has_no_unacknowledged_aws_solutions_findings(variant: Synthesized) -> None:
    assert [str(f) for f in unacknowledged(variant.findings, AWS_SOLUTIONS)] == []


def test_interface_endpoints_accept_https_from_the_vpc_only(variant: Synthesized) -> None:
    template = Template.from_json(variant.template("Network"))
    groups = template.find_resources(
        "AWS::EC2::SecurityGroup",
        {"Properties": {"GroupDescription": "Interface VPC endpoints: HTTPS from the VPC"}},
    )
    (group,) = groups.values()
    assert group["Properties"]["SecurityGroupIngress"] == [
        {
            "CidrIp": "10.0.0.0/16",
            "Description": "HTTPS from the VPC",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]


def test_support_warning_is_in_the_validation_report(variant: Synthesized) -> None:
    notes = [f for f in variant.findings if "kubernetesVersionSupport" in f.rule]
    assert notes and all(f.severity == "warning" for f in notes)


def test_private_endpoint_admits_the_configured_client_networks(variant: Synthesized) -> None:
    resources = variant.template("Cluster")["Resources"]
    cluster_id = next(k for k, v in resources.items() if v["Type"] == "AWS::EKS::Cluster")
    rules = [
        v["Properties"]
        for v in resources.values()
        if v["Type"] == "AWS::EC2::SecurityGroupIngress" and "CidrIp" in v["Properties"]
    ]
    assert rules == [
        {
            "CidrIp": "172.16.0.0/12",
            "Description": "kubectl from 172.16.0.0/12 to the private API endpoint",
            "FromPort": 443,
            "GroupId": {"Fn::GetAtt": [cluster_id, "ClusterSecurityGroupId"]},
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]
