"""The NetworkPolicy evaluator answers as the Kubernetes API defines ingress rules (and can say no)."""

from __future__ import annotations

from typing import Any

from tests.helpers.netpol import Source, admitted, selects

DEPLOYMENT: dict[str, Any] = {
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "app"},
    "spec": {
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]}]},
        }
    },
}


def policy(ingress: list[dict[str, Any]], *, selector: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "app"},
        "spec": {
            "podSelector": selector if selector is not None else {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def test_no_policy_admits_everything() -> None:
    assert admitted([DEPLOYMENT], DEPLOYMENT, Source(ip="203.0.113.9"), 8080)
    other = policy([], selector={"matchLabels": {"app": "db"}})
    assert admitted([DEPLOYMENT, other], DEPLOYMENT, Source(ip="203.0.113.9"), 8080)


def test_ip_block_with_except_and_ports() -> None:
    p = policy(
        [
            {
                "from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.9.0/24"]}}],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            }
        ]
    )
    assert admitted([p], DEPLOYMENT, Source(ip="10.0.1.1"), 8080)
    assert not admitted([p], DEPLOYMENT, Source(ip="10.0.1.1"), 8081)
    assert not admitted([p], DEPLOYMENT, Source(ip="10.0.9.5"), 8080)
    assert not admitted([p], DEPLOYMENT, Source(ip="10.1.0.1"), 8080)


def test_namespace_and_pod_selectors_and_named_ports() -> None:
    p = policy(
        [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                        "podSelector": {
                            "matchExpressions": [{"key": "role", "operator": "In", "values": ["scraper"]}]
                        },
                    }
                ],
                "ports": [{"port": "http"}],
            }
        ]
    )
    scraper = Source(ip="192.168.0.4", namespace="monitoring", labels={"role": "scraper"})
    assert admitted([p], DEPLOYMENT, scraper, 8080)
    assert not admitted([p], DEPLOYMENT, Source(ip="192.168.0.4", namespace="monitoring", labels={}), 8080)
    assert not admitted(
        [p], DEPLOYMENT, Source(ip="192.168.0.4", namespace="default", labels={"role": "scraper"}), 8080
    )
    assert not admitted([p], DEPLOYMENT, Source(ip="192.168.0.4"), 8080)  # an address matches no selector


def test_empty_rule_and_deny_all() -> None:
    assert admitted([policy([{}])], DEPLOYMENT, Source(ip="203.0.113.9"), 1)
    assert not admitted([policy([])], DEPLOYMENT, Source(ip="10.0.0.1"), 8080)


def test_selector_operators() -> None:
    labels = {"a": "1"}
    assert selects({}, labels)
    assert not selects(None, labels)
    assert selects({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}, labels)
    assert not selects({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, labels)
