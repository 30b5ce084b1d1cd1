"""tools/synth_summary.py on the session's assembly, and on a hand-made one with Kubernetes manifests."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Synthesized
from tools.synth_summary import summarize


def test_summary_of_real_assembly(synthesized: Synthesized) -> None:
    text = summarize(Path(synthesized.assembly.directory))
    assert "Network  (stack llama-eks-dev-network):" in text
    assert "Cluster  (stack llama-eks-dev-cluster):" in text
    assert "     1  AWS::EKS::Cluster" in text
    nodegroups = sum(
        r["Type"] == "AWS::EKS::Nodegroup" for r in synthesized.template("Cluster")["Resources"].values()
    )
    assert f"{nodegroups:6d}  AWS::EKS::Nodegroup" in text
    n_stacks = len(synthesized.assembly.stacks)
    assert text.splitlines()[-1].startswith(f"Total: {n_stacks} stacks, ")
    # The container images a deploy builds, under their stack.
    inference = text.split("Inference  (stack ")[1]
    assert "    Image asset: llama chat UI (linux/amd64)\n" in inference
    assert "    Image asset: llama model server (CUDA) (linux/amd64)\n" in inference


def _split(text: str) -> list[object]:
    before, after = text.split("PLACEHOLDER")
    return [before, {"Ref": "X"}, after]


def test_counts_kubernetes_objects_and_helm_releases(tmp_path: Path) -> None:
    manifest = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "llama"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "PLACEHOLDER", "namespace": "llama"},
        },
        {"apiVersion": "v1", "kind": "List", "items": [{"kind": "Service"}, {"kind": "Service"}]},
    ]
    template = {
        "Resources": {
            "M": {
                "Type": "Custom::AWSCDK-EKS-KubernetesResource",
                # tokens inside the manifest become Fn::Join; the summary still parses it
                "Properties": {"Manifest": {"Fn::Join": ["", _split(json.dumps(manifest))]}},
            },
            "H": {
                "Type": "Custom::AWSCDK-EKS-HelmChart",
                "Properties": {"Chart": "karpenter", "Version": "1.8.1", "Namespace": "kube-system"},
            },
        }
    }
    (tmp_path / "S.template.json").write_text(json.dumps(template))
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "artifacts": {
                    "S": {
                        "type": "aws:cloudformation:stack",
                        "displayName": "S",
                        "properties": {"templateFile": "S.template.json", "stackName": "s"},
                    }
                }
            }
        )
    )
    text = summarize(tmp_path)
    assert "    Kubernetes objects: Deployment 1, Namespace 1, Service 2" in text
    assert "    Helm release: karpenter 1.8.1 -> namespace kube-system" in text
    assert text.splitlines()[-1] == "Total: 1 stacks, 2 resources, 4 Kubernetes objects"
