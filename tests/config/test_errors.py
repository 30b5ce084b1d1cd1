"""How configuration errors are reported: every bad key at once, each with its value and what is allowed."""

from __future__ import annotations

import pytest

from config import ConfigError, InferenceConfig, load_config
from config.errors import Problem
from tests.conftest import cdk_json_context


def _error(**overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_config({**cdk_json_context(), **overrides})
    return err.value


def test_every_bad_key_is_reported_in_one_message() -> None:
    error = _error(
        **{
            "cluster.name": "9lives",
            "network.natGateways": "two",
            "inference.replicas": "0",
            "addons.karpenter.gpuLimit": "many",
        }
    )
    assert [p.key for p in error.problems] == [
        "network.natGateways",
        "cluster.name",
        "addons.karpenter.gpuLimit",
        "inference.replicas",
    ]
    assert str(error) == (
        "4 invalid config values:\n"
        "- Invalid config 'network.natGateways': 'two'. Allowed: one of ['onePerAz', 'single'].\n"
        "- Invalid config 'cluster.name': '9lives'. Allowed: 1-100 characters: letters, digits, '-' and '_', "
        "starting with a letter.\n"
        "- Invalid config 'addons.karpenter.gpuLimit': 'many'. Allowed: an integer from 1 to 1024.\n"
        "- Invalid config 'inference.replicas': 0. Allowed: an integer from 1 to 100."
    )
    # The first problem stays available as the error's own fields.
    assert (error.key, error.value) == ("network.natGateways", "two")


def test_several_problems_of_one_rule_are_all_named() -> None:
    error = _error(
        **{
            "addons.loadBalancerController.enabled": "false",
            "addons.vpa.enabled": "false",
            "inference.vpa.enabled": "true",
        }
    )
    assert [p.key for p in error.problems] == [
        "addons.loadBalancerController.enabled",
        "inference.vpa.enabled",
    ]


def test_a_list_reports_its_first_bad_item_once() -> None:
    error = _error(**{"cluster.logging": "api,kubelet,etcd"})
    assert error.problems == (
        Problem(
            "cluster.logging",
            "kubelet",
            "items from ['api', 'audit', 'authenticator', 'controllerManager', 'scheduler']",
        ),
    )


def test_cross_section_rules_wait_for_valid_sections() -> None:
    # A bad value inside a section is reported alone: rules that read the section would only add noise.
    error = _error(**{"addons.karpenter.version": "v1", "addons.karpenter.enabled": "false"})
    assert [p.key for p in error.problems] == ["addons.karpenter.version"]


def test_values_from_the_command_line_are_read_strictly() -> None:
    config = load_config(
        {
            **cdk_json_context(),
            "compute.systemNodegroup.maxSize": " 4 ",
            "network.flowLogs": "FALSE",
            "cluster.adminPrincipalArns": "",
            "compute.gpuNodegroup.labels": '{"team": "ml"}',
        }
    )
    assert config.compute.system_nodegroup.max_size == 4
    assert config.network.flow_logs is False
    assert config.cluster.admin_principal_arns == ()
    assert dict(config.compute.gpu_nodegroup.labels) == {"team": "ml"}
    for key, value, allowed in [
        ("network.flowLogs", "yes", "true or false"),
        ("network.flowLogs", 1, "true or false"),
        ("compute.systemNodegroup.maxSize", True, "an integer from 1 to 450"),
        ("compute.systemNodegroup.maxSize", 2.5, "an integer from 1 to 450"),
        ("compute.gpuNodegroup.labels", "team=ml", "a JSON object of string to string"),
    ]:
        assert _error(**{key: value}).problems == (Problem(key, value, allowed),)


def test_defaults_that_depend_on_other_keys_are_concrete() -> None:
    cpu = InferenceConfig.load({"accelerator": "cpu", "resources": {"memory": "24Gi"}})
    assert (cpu.resources.cpu_request, cpu.resources.cpu_limit, cpu.resources.memory) == ("2", "4", "24Gi")
    assert cpu.autoscaling.mode.value == "hpa"
    private = load_config({"cluster.endpointAccess": "private"}).cluster
    assert private.public_access_cidrs == ()
    eu = load_config({"aws.region": "eu-west-1"}).network
    assert eu.availability_zones == ("eu-west-1a", "eu-west-1b", "eu-west-1c")


def test_fields_set_are_the_keys_given() -> None:
    # Filled-in defaults do not count as given: rules that blame "the key you changed" rely on it.
    config = InferenceConfig.load({"accelerator": "cpu", "resources": {"memory": "24Gi"}})
    assert config.model_fields_set == {"accelerator", "resources"}
    assert config.resources.model_fields_set == {"memory"}
    assert config.autoscaling.model_fields_set == set()
    assert load_config({}).network.model_fields_set == set()
