"""Issue 11's cluster, network and compute settings: production defaults and rules, admin principals, the
retired Kubernetes versions and the nodes' pinned AMI release, with their exact error texts."""

from __future__ import annotations

from typing import Any

import pytest

from config import ConfigError, EndpointAccess, load_config
from config.cluster import FIND_YOUR_ARN
from tests.conftest import cdk_json_context

ADMIN = "arn:aws:iam::123456789012:role/platform-admin"
SSO_ROLE = (
    "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/us-west-2/"
    "AWSReservedSSO_AdministratorAccess_0123456789abcdef"
)
#: prod (production: true in cdk.json) with the one thing it cannot default: an admin.
PROD = {"env": "prod", "cluster.adminPrincipalArns": ADMIN}


def _load(**overrides: Any) -> Any:
    return load_config({**cdk_json_context(), **overrides})


def _error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as err:
        _load(**overrides)
    return str(err.value)


# ---------------------------------------------------------------- production environments


def test_cdk_json_marks_prod_as_production_and_dev_not() -> None:
    assert cdk_json_context()["environments"]["prod"]["production"] is True
    assert _load().production is False
    assert _load(**PROD).production is True


def test_production_can_be_set_for_any_environment_and_must_be_a_boolean() -> None:
    context = cdk_json_context()
    context["environments"]["staging"] = {"production": True, "cluster": {"adminPrincipalArns": [ADMIN]}}
    assert load_config({**context, "env": "staging"}).cluster.endpoint_access is EndpointAccess.PRIVATE
    context["environments"]["staging"]["production"] = "yes"
    with pytest.raises(ConfigError) as err:
        load_config({**context, "env": "staging"})
    assert str(err.value) == "Invalid config 'production': 'yes'. Allowed: true or false."


def test_endpoint_defaults_dev_open_production_private() -> None:
    dev = _load().cluster
    assert (dev.endpoint_access, dev.public_access_cidrs) == (
        EndpointAccess.PUBLIC_AND_PRIVATE,
        ("0.0.0.0/0",),
    )
    prod = _load(**PROD).cluster
    assert (prod.endpoint_access, prod.public_access_cidrs) == (EndpointAccess.PRIVATE, ())


def test_production_public_endpoint_needs_explicit_narrow_cidrs() -> None:
    public = {**PROD, "cluster.endpointAccess": "publicAndPrivate"}
    assert _error(**public) == (
        "Invalid config 'cluster.publicAccessCidrs': []. Allowed: a non-empty list of IPv4 CIDRs when "
        "cluster.endpointAccess is 'publicAndPrivate' in a production environment: your office/VPN egress "
        "ranges "
        "(use 'private' for no public access)."
    )
    assert _error(**public, **{"cluster.publicAccessCidrs": "198.51.100.0/24,0.0.0.0/0"}) == (
        "Invalid config 'cluster.publicAccessCidrs': ['198.51.100.0/24', '0.0.0.0/0']. Allowed: CIDRs "
        "narrower "
        "than 0.0.0.0/0 in a production environment (your office/VPN egress ranges), or "
        "cluster.endpointAccess "
        "'private'."
    )
    cluster = _load(**public, **{"cluster.publicAccessCidrs": "198.51.100.0/24"}).cluster
    assert cluster.public_access_cidrs == ("198.51.100.0/24",)


def test_production_needs_an_admin_and_says_how_to_find_ones_arn() -> None:
    assert _error(env="prod") == (
        "Invalid config 'cluster.adminPrincipalArns': []. Allowed: at least one IAM role or user ARN in a "
        "production environment (`production: true`; nobody else gets kubectl access): find yours with `aws "
        "sts "
        "get-caller-identity`: an IAM user ARN (arn:aws:iam::ACCOUNT:user/NAME) is used as is; for an "
        "assumed "
        "role (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION, e.g. an IAM Identity Center (SSO) permission "
        "set) "
        "give the role's IAM ARN, path included, as `aws iam get-role --role-name ROLE --query Role.Arn "
        "--output "
        "text` prints it, e.g. arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/us-west-2/"
        "AWSReservedSSO_AdministratorAccess_0123456789abcdef."
    )
    assert _load().cluster.admin_principal_arns == ()  # dev: allowed (synth warns)


def test_supported_type_is_standard_and_extended_one_key_away() -> None:
    assert _load().cluster.support_type == "standard"
    assert _load(**{"cluster.supportType": "extended"}).cluster.support_type == "extended"


# ---------------------------------------------------------------- admin principals


@pytest.mark.parametrize(
    "arn",
    [
        ADMIN,
        "arn:aws:iam::123456789012:role/ops/break-glass",
        SSO_ROLE,
        # Identity Center homed in us-east-1: no region in the path
        "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_ReadOnly_0123456789abcdef",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws-cn:iam::123456789012:role/platform-admin",
    ],
)
def test_admin_principals_roles_users_and_paths(arn: str) -> None:
    assert _load(**{"cluster.adminPrincipalArns": arn}).cluster.admin_principal_arns == (arn,)


def test_assumed_role_arn_is_refused_with_the_command_that_gives_the_role_arn() -> None:
    session = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/me"
    assert _error(**{"cluster.adminPrincipalArns": session}) == (
        f"Invalid config 'cluster.adminPrincipalArns': '{session}'. Allowed: the IAM role ARN of assumed "
        f"role "
        "AWSReservedSSO_AdministratorAccess_0123456789abcdef, not the STS session ARN that `aws sts "
        "get-caller-identity` prints (access entries take IAM principals): `aws iam get-role --role-name "
        "AWSReservedSSO_AdministratorAccess_0123456789abcdef --query Role.Arn --output text` prints it, path "
        "included."
    )


def test_sso_role_without_its_path_is_refused() -> None:
    pathless = "arn:aws:iam::123456789012:role/AWSReservedSSO_AdministratorAccess_0123456789abcdef"
    assert _error(**{"cluster.adminPrincipalArns": pathless}) == (
        f"Invalid config 'cluster.adminPrincipalArns': '{pathless}'. Allowed: the IAM Identity Center role's "
        "full ARN, path included (EKS refuses the ARN without it as an invalid principal): `aws iam get-role "
        "--role-name AWSReservedSSO_AdministratorAccess_0123456789abcdef --query Role.Arn --output text` "
        "prints "
        "arn:aws:iam::ACCOUNT:role/aws-reserved/sso.amazonaws.com/REGION/"
        "AWSReservedSSO_AdministratorAccess_0123456789abcdef (no REGION/ when Identity Center lives in "
        "us-east-1)."
    )


def test_admin_principals_without_duplicates() -> None:
    assert _error(**{"cluster.adminPrincipalArns": f"{ADMIN},{ADMIN}"}) == (
        f"Invalid config 'cluster.adminPrincipalArns': ['{ADMIN}', '{ADMIN}']. Allowed: a list without "
        "duplicates."
    )


def test_find_your_arn_names_both_commands() -> None:
    assert "aws sts get-caller-identity" in FIND_YOUR_ARN
    assert "aws iam get-role --role-name ROLE --query Role.Arn --output text" in FIND_YOUR_ARN


# ---------------------------------------------------------------- Kubernetes versions


def test_a_new_1_31_cluster_is_refused_with_the_end_of_extended_support() -> None:
    assert _error(**{"cluster.kubernetesVersion": "1.31"}) == (
        "Invalid config 'cluster.kubernetesVersion': '1.31'. Allowed: one of ['1.32', '1.33', '1.34', "
        "'1.35', "
        "'1.36'] (a string): EKS extended support for 1.31 ended 2026-11-26, EKS no longer creates 1.31 "
        "clusters "
        "and upgrades existing ones; an existing cluster moves one minor version at a time (a 1.31 cluster: "
        "set "
        "the next one)."
    )


def test_1_36_is_available() -> None:
    config = _load(**{"cluster.kubernetesVersion": "1.36"})
    assert config.cluster.version_info.layer_module == "aws_cdk.lambda_layer_kubectl_v36"
    assert config.compute.system_nodegroup.ami_release_version == "1.36.2-20260714"


# ---------------------------------------------------------------- nodegroups


def test_ami_release_follows_the_cluster_version() -> None:
    compute = _load(**{"cluster.kubernetesVersion": "1.34"}).compute
    assert compute.system_nodegroup.ami_release_version == "1.34.9-20260714"
    assert compute.gpu_nodegroup.ami_release_version == "1.34.9-20260714"
    assert compute.gpu_nodegroup.ami_release_date == "v20260714"
    assert (compute.gpu_nodegroup.ami_arch, compute.gpu_nodegroup.ami_variant) == ("x86_64", "nvidia")


def test_ami_release_of_another_kubernetes_version_is_refused() -> None:
    assert _error(**{"compute.gpuNodegroup.amiReleaseVersion": "1.34.9-20260714"}) == (
        "Invalid config 'compute.gpuNodegroup.amiReleaseVersion': '1.34.9-20260714'. Allowed: an EKS AL2023 "
        "AMI "
        "release of Kubernetes 1.35 (cluster.kubernetesVersion), such as 1.35.6-20260714: nodes follow the "
        "control plane's minor version."
    )
    assert _error(**{"compute.gpuNodegroup.amiReleaseVersion": "v20260714"}) == (
        "Invalid config 'compute.gpuNodegroup.amiReleaseVersion': 'v20260714'. Allowed: an EKS AL2023 AMI "
        "release such as 1.35.6-20260714, or null."
    )


def test_bottlerocket_nodes_are_not_pinned() -> None:
    system = _load(**{"compute.systemNodegroup.amiType": "BOTTLEROCKET_X86_64"}).compute.system_nodegroup
    assert system.ami_release_version is None
    assert _error(
        **{
            "compute.systemNodegroup.amiType": "BOTTLEROCKET_X86_64",
            "compute.systemNodegroup.amiReleaseVersion": "1.35.6-20260714",
        }
    ) == (
        "Invalid config 'compute.systemNodegroup.amiReleaseVersion': '1.35.6-20260714'. Allowed: null with "
        "amiType BOTTLEROCKET_X86_64 (the pinned releases are EKS AL2023 AMI releases)."
    )


def test_gpu_nodegroup_defaults_dev_spot_production_two_on_demand() -> None:
    dev = _load().compute.gpu_nodegroup
    assert (dev.capacity_type, dev.min_size, dev.desired_size, dev.max_size, dev.force_update) == (
        "SPOT",
        0,
        1,
        2,
        True,
    )
    prod = _load(**PROD).compute.gpu_nodegroup
    assert (prod.capacity_type, prod.min_size, prod.desired_size, prod.max_size, prod.force_update) == (
        "ON_DEMAND",
        2,
        2,
        3,
        False,
    )


def test_production_gpu_nodegroup_that_serves_must_survive_a_node() -> None:
    serving = {**PROD, "compute.gpuCapacity": "nodegroup"}
    assert _error(
        **serving, **{"compute.gpuNodegroup.capacityType": "SPOT", "compute.gpuNodegroup.minSize": "1"}
    ) == (
        "2 invalid config values:\n"
        "- Invalid config 'compute.gpuNodegroup.minSize': 1. Allowed: an integer >= 2 in a production "
        "environment "
        "when compute.gpuCapacity is 'nodegroup' (two serving nodes over the zones keep a replica through a "
        "node's "
        "loss or update).\n"
        "- Invalid config 'compute.gpuNodegroup.capacityType': 'SPOT'. Allowed: 'ON_DEMAND' in a production "
        "environment when compute.gpuCapacity is 'nodegroup' (spot capacity of one nodegroup can be "
        "reclaimed all "
        "at once)."
    )
    # With Karpenter serving, the unused nodegroup's values are not checked.
    karpenter = _load(**PROD, **{"compute.gpuNodegroup.capacityType": "SPOT"})
    assert karpenter.compute.gpu_nodegroup.capacity_type == "SPOT"


def test_production_system_nodegroup_keeps_two_nodes() -> None:
    assert _error(
        **PROD, **{"compute.systemNodegroup.minSize": "1", "compute.systemNodegroup.desiredSize": "1"}
    ) == (
        "Invalid config 'compute.systemNodegroup.minSize': 1. Allowed: an integer >= 2 in a production "
        "environment (the controllers, CoreDNS and the load balancer controller must survive the loss of a "
        "node)."
    )
