"""The VPA add-on as deployed (stacks/addons/vpa.py): CRDs then recommender, last in the install chain, the
seed's VPAs of the model and the chat UI applied after it, and ``addons.vpa.enabled: false`` removing all of
it (the alternative synth of tests/conftest.py switches it off)."""

from __future__ import annotations

import copy
from typing import Any

import cdk8s
import pytest

from charts.vpa import CRD_FILE, VpaRecommender, VpaRecommenderProps
from tests.conftest import Synthesized
from tests.helpers import crd_schema
from tests.stacks.addons._cfn import helm_releases, manifests, resources

#: Logical IDs of the add-on's two manifests: renaming one replaces (deletes and re-applies) its objects,
#: and deleting the CRDs deletes every VPA and checkpoint in the cluster.
VPA_IDS = {"Crds": "VpaCrdsE8C9F919", "Recommender": "VpaRecommender7B2A3A5C"}
SYSTEM = {"llama-eks/node-class": "system"}


@pytest.fixture(scope="module")
def addons(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.template("Addons")


def _applied(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` without the prune label the kubectl provider adds to every object of a manifest."""
    out = copy.deepcopy(docs)
    for doc in out:
        labels = doc["metadata"].get("labels", {})
        pruned = {k: v for k, v in labels.items() if not k.startswith("aws.cdk.eks/prune-")}
        assert len(pruned) == len(labels) - 1  # exactly one prune label on each object
        if pruned:
            doc["metadata"]["labels"] = pruned
        else:
            del doc["metadata"]["labels"]
    return out


def _vpas(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for docs in manifests(template).values()
        for doc in docs
        if doc["kind"] == "VerticalPodAutoscaler"
    }


def test_crds_then_recommender_with_pinned_logical_ids(addons: dict[str, Any]) -> None:
    res = addons["Resources"]
    applied = {k: _applied(v) for k, v in manifests(addons).items() if k in VPA_IDS.values()}
    crds = [(d["kind"], d["metadata"]["name"]) for d in applied[VPA_IDS["Crds"]]]
    assert crds == [
        ("CustomResourceDefinition", "verticalpodautoscalercheckpoints.autoscaling.k8s.io"),
        ("CustomResourceDefinition", "verticalpodautoscalers.autoscaling.k8s.io"),
    ]
    rendered = cdk8s.Testing.synth(
        VpaRecommender(cdk8s.Testing.app(), "VpaRecommender", props=VpaRecommenderProps(SYSTEM))
    )
    assert applied[VPA_IDS["Recommender"]] == rendered  # on the system nodes, as the chart renders it
    # The recommender is created after the CRDs (it lists VPAs and checkpoints from its first start) and
    # deleted before them.
    assert VPA_IDS["Crds"] in res[VPA_IDS["Recommender"]]["DependsOn"]
    assert VPA_IDS["Recommender"] not in res[VPA_IDS["Crds"]].get("DependsOn", [])


def test_the_crds_are_the_vendored_file(addons: dict[str, Any]) -> None:
    import yaml

    crds = _applied(manifests(addons)[VPA_IDS["Crds"]])
    assert crds == list(yaml.safe_load_all(CRD_FILE.read_text()))


def test_last_in_the_install_chain(addons: dict[str, Any]) -> None:
    keda = helm_releases(addons)["keda"]["LogicalId"]
    for logical_id in VPA_IDS.values():
        assert keda in addons["Resources"][logical_id]["DependsOn"]
    # Nothing else in the stack waits for it: on destroy it goes first (after the InferenceStack's VPAs).
    waiting = {
        k for k, v in addons["Resources"].items() if set(VPA_IDS.values()) & set(v.get("DependsOn", []))
    }
    assert waiting <= set(VPA_IDS.values())


def test_the_seeds_vpas_are_deployed_after_the_addon(synthesized: Synthesized) -> None:
    inference = synthesized.stacks.inference
    installed = synthesized.stacks.addons.installed
    assert installed.vpa is not None
    assert installed.vpa in inference.manifests["Autoscaling"].node.dependencies
    assert inference.chat_ui is not None
    assert installed.vpa in inference.chat_ui.manifests["Autoscaling"].node.dependencies
    artifact = next(s for s in synthesized.assembly.stacks if s.hierarchical_id == "Inference")
    assert "Addons" in {d.id for d in artifact.dependencies}  # destroyed before the CRDs go


def test_default_synth_has_both_vpas_in_recommendation_mode(synthesized: Synthesized) -> None:
    vpas = _vpas(synthesized.template("Inference"))
    assert set(vpas) == {"my-llama", "chatbot-ui-vpa"}
    for vpa in vpas.values():
        assert vpa["spec"]["updatePolicy"] == {"updateMode": "Off"}
        crd_schema.validate(vpa, CRD_FILE.parent)
    # Seed ch6's chatbot-ui-vpa bounds, number for number.
    assert vpas["chatbot-ui-vpa"]["spec"]["resourcePolicy"]["containerPolicies"] == [
        {
            "containerName": "*",
            "minAllowed": {"cpu": "1000m", "memory": "2Gi"},
            "maxAllowed": {"cpu": "2000m", "memory": "4Gi"},
            "controlledValues": "RequestsAndLimits",
        }
    ]
    assert vpas["my-llama"]["spec"]["targetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "my-llama",
    }


def test_switched_off_there_is_no_vpa_anywhere(alternative: Synthesized) -> None:
    assert alternative.config.addons.vpa.enabled is False
    assert alternative.stacks.addons.installed.vpa is None
    addons = alternative.template("Addons")
    assert not [k for k in resources(addons, "Custom::AWSCDK-EKS-KubernetesResource") if k.startswith("Vpa")]
    kinds = {
        doc["kind"] for t in alternative.templates.values() for docs in manifests(t).values() for doc in docs
    }
    assert not kinds & {"VerticalPodAutoscaler", "CustomResourceDefinition"}
