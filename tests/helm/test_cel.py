"""CEL validation rules (``x-kubernetes-validations``) of the CRDs, evaluated on custom resources.

The strict schema check (tests/helpers/crd_schema.py) does not evaluate CEL; Karpenter and KEDA express
some constraints only there. tests/helpers/cel.py evaluates them with cel-python. Fixture pairs: for each
rule family, the app's own object (compliant) and a copy broken in one place (the rule fires, with its
message). Then every custom resource of every variant, the app's and the charts', passes every rule of
the CRD the cluster serves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.helm.conftest import HelmVariant
from tests.helpers import cel
from tests.helpers.crd_schema import served_schemas, validate
from tests.helpers.helm import manifests

APP_KINDS = {"NodePool", "EC2NodeClass", "ScaledObject", "ServiceMonitor"}


@pytest.fixture(scope="session")
def app_objects(synthesized) -> dict[str, dict[str, Any]]:
    """The default app's custom resources by kind (one each: the GPU NodePool, the EC2NodeClass, the
    ScaledObject, the inference ServiceMonitor)."""
    objects = {}
    for *_, obj in manifests(synthesized.templates):
        if obj["kind"] in APP_KINDS and not (
            obj["kind"] == "ServiceMonitor" and obj["metadata"]["name"] != "my-llama"
        ):
            objects[obj["kind"]] = obj
    assert set(objects) == APP_KINDS
    return objects


def evaluate(obj: dict[str, Any]) -> cel.Result:
    """Default ``obj`` like the API server (schema check included), then evaluate its CRD's CEL rules."""
    schema = served_schemas()[(obj["apiVersion"], obj["kind"])]
    return cel.evaluate(schema, validate(obj))


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``value`` at ``path`` (dict keys and list indexes), creating dicts on the way."""

    def apply(obj: dict[str, Any]) -> None:
        node: Any = obj
        for part in path[:-1]:
            node = node[part] if isinstance(part, int) else node.setdefault(part, {})
        node[path[-1]] = value

    return apply


#: rule family -> (kind, how to break the app's object, the path and message of the rule that fires).
PAIRS: dict[str, tuple[str, Callable[[dict[str, Any]], None], list[tuple[str, str]]]] = {
    "nodeclass-role-xor-instance-profile": (
        "EC2NodeClass",
        _set(("spec", "instanceProfile"), "KarpenterNodeInstanceProfile"),
        [("spec", "must specify exactly one of ['role', 'instanceProfile']")],
    ),
    "nodeclass-alias-format": (
        "EC2NodeClass",
        _set(("spec", "amiSelectorTerms"), [{"alias": "al2023"}]),
        [
            (
                "spec.amiSelectorTerms[0].alias",
                "'alias' is improperly formatted, must match the format 'family@version'",
            )
        ],
    ),
    "nodeclass-alias-family": (
        "EC2NodeClass",
        _set(("spec", "amiSelectorTerms"), [{"alias": "ubuntu@latest"}]),
        [
            (
                "spec.amiSelectorTerms[0].alias",
                "family is not supported, must be one of the following: 'al2', 'al2023', 'bottlerocket', "
                "'windows2019', 'windows2022', 'windows2025'",
            )
        ],
    ),
    "nodeclass-alias-exclusive": (
        "EC2NodeClass",
        _set(("spec", "amiSelectorTerms"), [{"alias": "al2023@latest"}, {"id": "ami-0123456789abcdef0"}]),
        [
            (
                "spec.amiSelectorTerms",
                "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms",
            )
        ],
    ),
    "nodeclass-restricted-tags": (
        "EC2NodeClass",
        _set(("spec", "tags", "karpenter.sh/nodepool"), "x"),
        [("spec.tags", "tag contains a restricted tag matching karpenter.sh/nodepool")],
    ),
    "nodeclass-one-root-volume": (
        "EC2NodeClass",
        lambda o: o["spec"]["blockDeviceMappings"].append(
            {"deviceName": "/dev/xvdb", "rootVolume": True, "ebs": {"volumeSize": "20Gi"}}
        ),
        [("spec.blockDeviceMappings", "must have only one blockDeviceMappings with rootVolume")],
    ),
    "nodepool-restricted-requirement": (
        "NodePool",
        lambda o: o["spec"]["template"]["spec"]["requirements"].append(
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}
        ),
        [("spec.template.spec.requirements[4].key", 'label "kubernetes.io/hostname" is restricted')],
    ),
    "nodepool-requirement-operator": (
        "NodePool",
        lambda o: o["spec"]["template"]["spec"]["requirements"].append(
            {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["5", "6"]}
        ),
        [
            (
                "spec.template.spec.requirements",
                "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value",
            )
        ],
    ),
    "nodepool-restricted-label": (
        "NodePool",
        _set(("spec", "template", "metadata", "labels", "karpenter.sh/nodepool"), "x"),
        [("spec.template.metadata.labels", 'label "karpenter.sh/nodepool" is restricted')],
    ),
    "nodepool-budget-schedule": (
        "NodePool",
        lambda o: o["spec"]["disruption"]["budgets"].append({"nodes": "0", "schedule": "@daily"}),
        [("spec.disruption.budgets", "'schedule' must be set with 'duration'")],
    ),
    "nodepool-static-capacity": (
        "NodePool",
        _set(("spec", "replicas"), 2),
        # the GPU pool has limits (cpu, nvidia.com/gpu) and a weight: both static-pool rules fire
        [
            ("spec", "only 'limits.nodes' is supported on static NodePools"),
            ("spec", "'weight' is not supported on static NodePools"),
        ],
    ),
    "scaledobject-min-max": (
        "ScaledObject",
        _set(("spec", "minReplicaCount"), 9),
        [("spec", "minReplicaCount must be less than or equal to maxReplicaCount")],
    ),
}


def _break(kind: str, app_objects: dict[str, dict[str, Any]], how: Callable[[dict[str, Any]], None]) -> dict:
    broken = copy.deepcopy(app_objects[kind])
    how(broken)
    return broken


@pytest.mark.parametrize("family", PAIRS)
def test_rule_family_compliant_and_non_compliant(family: str, app_objects) -> None:
    kind, how, expected = PAIRS[family]
    compliant = evaluate(app_objects[kind])
    assert compliant.violations == []
    fired = evaluate(_break(kind, app_objects, how)).violations
    assert [(v.path, v.message) for v in fired] == expected


def test_every_app_kind_with_rules_has_a_fixture_pair(app_objects) -> None:
    covered = {PAIRS[f][0] for f in PAIRS}
    with_rules = {
        kind
        for kind, obj in app_objects.items()
        if list(cel.rules(served_schemas()[(obj["apiVersion"], obj["kind"])]))
    }
    # ServiceMonitor (prometheus-operator v0.93) has no CEL rules: nothing to fire.
    assert with_rules == {"NodePool", "EC2NodeClass", "ScaledObject"} <= covered


def test_transition_rules_are_skipped_on_create_and_reported(app_objects) -> None:
    result = evaluate(app_objects["NodePool"])
    assert result.evaluated > 10
    assert {rule for _, rule, _ in result.skipped} == {
        "has(self.replicas) == has(oldSelf.replicas)",
        "self.group == oldSelf.group",
        "self.kind == oldSelf.kind",
    }
    assert all(reason == cel.UNSUPPORTED["transition"] for *_, reason in result.skipped)


@pytest.mark.parametrize(
    "rule",
    [
        "quantity(self.cpu).isGreaterThan(quantity('1'))",  # Kubernetes quantity library
        "self.name.lowerAscii() == self.name",  # strings extension not implemented here
        "isURL(self.url)",
    ],
)
def test_a_rule_the_evaluator_cannot_evaluate_fails_loudly(rule: str) -> None:
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": rule}]}
    with pytest.raises(cel.UnsupportedRule, match="does not implement"):
        cel.evaluate(schema, {"cpu": "1", "name": "a", "url": "http://x"})


def test_an_evaluation_error_fails_loudly() -> None:
    # `self.missing` on an object without the field is an error in CEL (rules guard with has()).
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": "self.missing == 'x'"}]}
    with pytest.raises(cel.UnsupportedRule, match="failed to evaluate"):
        cel.evaluate(schema, {"present": 1})


def test_every_rule_of_the_installed_crds_is_supported_or_listed(helm_variants) -> None:
    crds = helm_variants("default").crd_set.schemas
    rules = {r.rule for schema in crds.values() for r in cel.rules(schema)}
    assert len(rules) > 50
    kinds = {rule: cel.classify(rule) for rule in rules}  # raises UnsupportedRule for anything unknown
    assert set(kinds.values()) <= {None, *cel.UNSUPPORTED}


def test_every_custom_resource_passes_the_cel_rules_of_its_crd(helm_variant: HelmVariant) -> None:
    crds = helm_variant.crd_set
    objects = [
        (f"{r.release.name}", o) for r, o in helm_variant.objects if (o["apiVersion"], o["kind"]) in crds
    ]
    objects += [(f"{stack}/{lid}", o) for stack, lid, _, o in manifests(helm_variant.templates)]
    problems, evaluated = [], 0
    for where, obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key not in crds:
            continue
        result = cel.evaluate(crds.schemas[key], crds.validate(obj))
        evaluated += result.evaluated
        problems += [f"{where} {obj['kind']}/{obj['metadata']['name']}: {v}" for v in result.violations]
    assert evaluated > 0
    assert not problems, f"[{helm_variant.name}] CEL rules fire:\n" + "\n".join(problems)
