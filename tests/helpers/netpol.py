"""Kubernetes NetworkPolicy ingress semantics, enough to ask "is this connection admitted?" of rendered
manifests (tests/charts): which policies select a pod, ``ipBlock`` (cidr, except), ``namespaceSelector`` /
``podSelector`` (matchLabels and matchExpressions), ports by number or by the pod's container port name.

A connection is admitted when no policy with ``Ingress`` in its ``policyTypes`` selects the pod, or when
one rule of one such policy matches both the source and the port (policies are additive).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """Where a connection comes from: an IP, and for a pod its namespace and labels (an NLB has neither)."""

    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        # The API server labels every namespace with its name.
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels; ``{}`` selects everything (``None``: a missing selector)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], source: Source) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(source.ip)
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if source.namespace is None:
        return False  # selectors match pods only
    ns_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    if ns_selector is None:
        # podSelector alone: pods of the policy's own namespace (checked by the caller through ``own``).
        return False
    return selects(ns_selector, source.namespace_labels) and selects(pod_selector or {}, source.labels)


def _port_matches(ports: Iterable[Mapping[str, Any]] | None, port: int, named: Mapping[str, int]) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        want = p.get("port")
        if want is None:
            return True
        number = named.get(want) if isinstance(want, str) else want
        end = p.get("endPort", number)
        if number is not None and number <= port <= end:
            return True
    return False


def container_ports(deployment: Manifest) -> dict[str, int]:
    """Container port name -> number of a Deployment's pods (named ports in policies resolve to these)."""
    spec = deployment["spec"]["template"]["spec"]
    return {
        p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p
    }


def admitted(manifests: Iterable[Manifest], deployment: Manifest, source: Source, port: int) -> bool:
    """Whether ``source`` may open a TCP connection to ``port`` of a pod of ``deployment``."""
    namespace = deployment["metadata"]["namespace"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    named = container_ports(deployment)
    policies = [
        m
        for m in manifests
        if m["kind"] == "NetworkPolicy"
        and m["metadata"].get("namespace") == namespace
        and "Ingress" in m["spec"].get("policyTypes", ["Ingress"])
        and selects(m["spec"].get("podSelector", {}), pod_labels)
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            own = source.namespace == namespace
            source_ok = not peers or any(
                _peer_matches(peer, source)
                or (
                    own
                    and "podSelector" in peer
                    and "namespaceSelector" not in peer
                    and selects(peer["podSelector"], source.labels)
                )
                for peer in peers
            )
            if source_ok and _port_matches(rule.get("ports"), port, named):
                return True
    return False
