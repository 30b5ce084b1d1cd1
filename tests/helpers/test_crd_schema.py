"""The strict CRD validator (tests/helpers/crd_schema.py): compliant/non-compliant fixture pairs."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

from tests.helpers.crd_schema import CrdValidationError, cel_rules, served_schemas, validate

NODEPOOL = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodePool",
    "metadata": {"name": "eks-gpu-np", "labels": {"app.kubernetes.io/part-of": "llama-eks"}},
    "spec": {
        "template": {
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                "requirements": [
                    {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g6"]}
                ],
            }
        },
        "limits": {"cpu": 1000, "nvidia.com/gpu": "8"},
    },
}


def _errors(resource, crd_dir=None) -> list[tuple[str, str]]:
    with pytest.raises(CrdValidationError) as info:
        validate(resource) if crd_dir is None else validate(resource, crd_dir)
    return info.value.errors


def test_served_versions_of_every_shared_crd_are_loaded():
    assert set(served_schemas()) == {
        ("karpenter.sh/v1", "NodePool"),
        ("karpenter.sh/v1", "NodeClaim"),
        ("karpenter.k8s.aws/v1", "EC2NodeClass"),
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("autoscaling.k8s.io/v1", "VerticalPodAutoscaler"),
        ("autoscaling.k8s.io/v1", "VerticalPodAutoscalerCheckpoint"),
    }


def test_compliant_nodepool_passes_and_gets_api_server_defaults():
    out = validate(NODEPOOL)
    assert out["spec"]["template"]["spec"]["expireAfter"] == "720h"
    assert out["spec"]["disruption"] == {
        "consolidateAfter": "0s",
        "budgets": [{"nodes": "10%"}],
        "consolidationPolicy": "WhenEmptyOrUnderutilized",
    }
    assert "disruption" not in NODEPOOL["spec"], "the input must not be modified"


def test_unknown_field_is_an_error_with_its_path():
    bad = copy.deepcopy(NODEPOOL)
    bad["spec"]["template"]["spec"]["instanceTypes"] = ["g6.xlarge"]
    assert _errors(bad) == [
        (
            "$['spec']['template']['spec']",
            "Additional properties are not allowed ('instanceTypes' was unexpected)",
        )
    ]


def test_enum_quantity_and_required_violations_are_all_reported():
    bad = copy.deepcopy(NODEPOOL)
    bad["spec"]["disruption"] = {"consolidationPolicy": "Never"}
    bad["spec"]["limits"]["nvidia.com/gpu"] = "8 GPUs"
    del bad["spec"]["template"]["spec"]["nodeClassRef"]
    # consolidateAfter has no default of its own: only a missing `disruption` gets {consolidateAfter: 0s}.
    assert _errors(bad)[0] == ("$['spec']['disruption']", "'consolidateAfter' is a required property")
    paths = [p for p, _ in _errors(bad)]
    assert paths == [
        "$['spec']['disruption']",
        "$['spec']['disruption']['consolidationPolicy']",
        "$['spec']['limits']['nvidia.com/gpu']",
        "$['spec']['template']['spec']",
    ]


def test_int_or_string_rejects_other_types():
    bad = copy.deepcopy(NODEPOOL)
    bad["spec"]["limits"]["cpu"] = 1.5
    assert [p for p, _ in _errors(bad)] == ["$['spec']['limits']['cpu']"]


def test_metadata_is_checked_as_object_meta():
    bad = copy.deepcopy(NODEPOOL)
    bad["metadata"] = {"name": "EKS_GPU", "labels": {"team": "x" * 64}, "uid": "123"}
    assert [p for p, _ in _errors(bad)] == [
        "$['metadata']",
        "$['metadata']['labels']['team']",
        "$['metadata']['name']",
    ]


def test_unknown_kind_or_version_is_an_error():
    assert _errors({**NODEPOOL, "apiVersion": "karpenter.sh/v1beta1"})[0][1].startswith(
        "no served CRD version"
    )


def test_go_inline_flags_are_translated():
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "r", "namespace": "monitoring"},
        "spec": {"groups": [{"name": "g", "partial_response_strategy": "WARN", "rules": [{"expr": "up"}]}]},
    }
    validate(rule)
    rule["spec"]["groups"][0]["partial_response_strategy"] = "ignore"
    assert [p for p, _ in _errors(rule)] == ["$['spec']['groups'][0]['partial_response_strategy']"]


SYNTHETIC_CRD = textwrap.dedent(
    """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.example.com}
    spec:
      group: example.com
      names: {kind: Widget, plural: widgets}
      scope: Namespaced
      versions:
      - name: v1beta1
        served: false
        storage: false
        schema: {openAPIV3Schema: {type: object}}
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              apiVersion: {type: string}
              kind: {type: string}
              metadata: {type: object}
              spec:
                type: object
                properties:
                  size: {x-kubernetes-int-or-string: true}
                  port: {type: string, format: int-or-string}
                  note: {type: string, nullable: true}
                  mode: {type: string, default: fast, enum: [fast, slow]}
                  free: {type: object, x-kubernetes-preserve-unknown-fields: true}
                  empty: {type: object}
                  items:
                    type: array
                    items:
                      type: object
                      properties:
                        weight: {type: integer, default: 1}
    """
)


@pytest.fixture(scope="module")
def widget_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("crds")
    (d / "example.com_widgets.yaml").write_text(SYNTHETIC_CRD)
    return d


def _widget(**spec):
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def test_synthetic_compliant_widget(widget_dir):
    out = validate(
        _widget(size=3, port="http", note=None, free={"anything": {"goes": 1}}, items=[{}, {"weight": 5}]),
        widget_dir,
    )
    assert out["spec"]["mode"] == "fast"
    assert out["spec"]["items"] == [{"weight": 1}, {"weight": 5}]
    validate(_widget(size="50%", port=8080), widget_dir)


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"size": [1]}, "$['spec']['size']", "[1] is not of type 'integer', 'string'"),
        ({"port": 1.5}, "$['spec']['port']", "1.5 is not of type 'integer', 'string'"),
        ({"mode": None}, "$['spec']['mode']", None),  # not nullable: null is defaulted, then valid
        ({"items": [None]}, "$['spec']['items'][0]", "None is not of type 'object'"),
        (
            {"empty": {"x": 1}},
            "$['spec']['empty']",
            "Additional properties are not allowed ('x' was unexpected)",
        ),
        ({"mode": "medium"}, "$['spec']['mode']", "'medium' is not one of ['fast', 'slow']"),
    ],
)
def test_synthetic_non_compliant_widget(widget_dir, spec, path, message):
    if message is None:
        assert validate(_widget(**spec), widget_dir)["spec"]["mode"] == "fast"
        return
    assert _errors(_widget(**spec), widget_dir) == [(path, message)]


def test_unserved_version_is_rejected(widget_dir):
    bad = {**_widget(), "apiVersion": "example.com/v1beta1"}
    assert "no served CRD version" in _errors(bad, widget_dir)[0][1]


def test_cel_rules_are_listed_not_evaluated():
    rules = cel_rules("karpenter.k8s.aws/v1", "EC2NodeClass")
    assert (
        "self.split('@')[0] in ['al2','al2023','bottlerocket','windows2019','windows2022','windows2025']"
        in rules
    )
