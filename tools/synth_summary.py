#!/usr/bin/env python3
"""Print a short summary of a synthesized cloud assembly: stacks, resource counts, Kubernetes manifests.

    python tools/synth_summary.py [cdk.out]

Kubernetes objects are counted by kind inside ``Custom::AWSCDK-EKS-KubernetesResource`` manifests;
Helm releases (``Custom::AWSCDK-EKS-HelmChart``) are listed with chart, version and namespace; container
image assets (``<stack>.assets.json``) with their display name and platform.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

K8S_RESOURCE = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_CHART = "Custom::AWSCDK-EKS-HelmChart"


def _literal(value: Any) -> str:
    """A CloudFormation string value with intrinsic functions replaced by a placeholder."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_literal(p) for p in parts)
    return "TOKEN"


def manifest_kinds(properties: dict[str, Any]) -> Counter[str]:
    text = _literal(properties.get("Manifest", "[]"))
    try:
        objects = json.loads(text)
    except ValueError:
        return Counter({"<unparsed manifest>": 1})
    if isinstance(objects, dict):
        objects = [objects]
    kinds: Counter[str] = Counter()
    for obj in objects:
        if isinstance(obj, dict) and obj.get("kind") == "List":
            kinds.update(str(i.get("kind")) for i in obj.get("items", []))
        elif isinstance(obj, dict):
            kinds[str(obj.get("kind"))] += 1
    return kinds


def image_assets(template_path: Path) -> list[str]:
    """ "display name (platform)" of every container image asset of the stack whose template this is."""
    assets = template_path.with_name(template_path.name.replace(".template.json", ".assets.json"))
    if not assets.exists():
        return []
    images = json.loads(assets.read_text()).get("dockerImages", {})
    return sorted(
        f"{image.get('displayName', asset_id)} ({image.get('source', {}).get('platform', 'any platform')})"
        for asset_id, image in images.items()
    )


def stacks(assembly: Path) -> list[tuple[str, str, Path]]:
    """(display id, stack name, template path) of every stack, nested stage assemblies included."""
    manifest = json.loads((assembly / "manifest.json").read_text())
    found = []
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") == "aws:cloudformation:stack":
            props = artifact.get("properties", {})
            name = props.get("stackName", artifact_id)
            display = artifact.get("displayName", artifact_id)
            found.append((display, name, assembly / props["templateFile"]))
        elif artifact.get("type") == "cdk:cloud-assembly":
            nested = assembly / artifact["properties"]["directoryName"]
            found.extend(stacks(nested))
    return found


def summarize(assembly: Path) -> str:
    lines = []
    total_resources = 0
    total_objects: Counter[str] = Counter()
    for display, name, template_path in stacks(assembly):
        template = json.loads(template_path.read_text())
        resources = template.get("Resources", {})
        total_resources += len(resources)
        lines.append(f"{display}  (stack {name}): {len(resources)} resources")
        for rtype, count in sorted(Counter(r["Type"] for r in resources.values()).items()):
            lines.append(f"    {count:4d}  {rtype}")
        kinds: Counter[str] = Counter()
        charts = []
        for res in resources.values():
            if res["Type"] == K8S_RESOURCE:
                kinds.update(manifest_kinds(res.get("Properties", {})))
            elif res["Type"] == HELM_CHART:
                p = res.get("Properties", {})
                charts.append(
                    f"{_literal(p.get('Chart'))} {_literal(p.get('Version', 'latest'))} "
                    f"-> namespace {_literal(p.get('Namespace', 'default'))}"
                )
        if kinds:
            lines.append("    Kubernetes objects: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for chart in sorted(charts):
            lines.append(f"    Helm release: {chart}")
        for image in image_assets(template_path):
            lines.append(f"    Image asset: {image}")
        total_objects.update(kinds)
    lines.append(
        f"Total: {len(stacks(assembly))} stacks, {total_resources} resources, "
        f"{sum(total_objects.values())} Kubernetes objects"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    assembly = Path(argv[1] if len(argv) > 1 else "cdk.out")
    if not (assembly / "manifest.json").exists():
        print(f"no cloud assembly at {assembly} (run `make synth`)", file=sys.stderr)
        return 1
    print(summarize(assembly))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
