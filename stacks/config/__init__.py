"""The app's one typed, frozen configuration, loaded once in ``app.py`` from ``cdk.json`` context.

Context layout (every key is documented in docs/configuration.md)::

    "env": "dev",                           # which entry of "environments" to apply
    "aws": {"account": null, "region": "us-west-2"},
    "tags": {"project": "llama-eks"},
    "network": {...}, "cluster": {...}, "compute": {...},
    "environments": {"dev": {<same sections, partial>}, "prod": {...}}

Precedence, lowest first: the base sections, then ``environments[env]`` (deep merge; lists replace),
then single keys given as dotted context keys, e.g. ``-c cluster.kubernetesVersion=1.34``.

To add a section: write ``stacks/config/<name>.py`` with a frozen dataclass and
``from_section(Section) -> XConfig``, add its name to ``SECTIONS``, one field to ``AppConfig`` and one
line to ``load_config``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from . import addons as _addons
from . import cluster as _cluster
from . import compute as _compute
from . import inference as _inference
from . import network as _network
from ._parse import Section
from .addons import AddonsConfig
from .cluster import ClusterConfig, EndpointAccess
from .compute import NODE_CLASS_LABEL, ComputeConfig, GpuCapacity, NodegroupConfig, Taint
from .errors import ConfigError
from .inference import InferenceConfig
from .network import NatGateways, NetworkConfig
from .versions import DEFAULT_KUBERNETES_VERSION, KUBERNETES_VERSIONS, KubernetesVersionInfo

__all__ = [
    "DEFAULT_KUBERNETES_VERSION",
    "KUBERNETES_VERSIONS",
    "NODE_CLASS_LABEL",
    "SECTIONS",
    "AddonsConfig",
    "AppConfig",
    "AwsConfig",
    "ClusterConfig",
    "ComputeConfig",
    "ConfigError",
    "EndpointAccess",
    "GpuCapacity",
    "InferenceConfig",
    "KubernetesVersionInfo",
    "NatGateways",
    "NetworkConfig",
    "NodegroupConfig",
    "Taint",
    "load_config",
]

#: Top-level context keys that hold configuration (each a JSON object).
SECTIONS: tuple[str, ...] = ("aws", "tags", "network", "cluster", "compute", "addons", "inference")

DEFAULT_ENV = "dev"

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_TAG_KEY = re.compile(r"^(?!aws:)[\w .:/=+@-]{1,128}$")


@dataclass(frozen=True)
class AwsConfig:
    """Where the stacks deploy. ``account`` None: the CLI's current account (``CDK_DEFAULT_ACCOUNT``)."""

    account: str | None = None
    region: str = "us-west-2"


@dataclass(frozen=True)
class AppConfig:
    """Everything the stacks need, validated. Constructs receive parts of it, never the raw context."""

    env_name: str
    aws: AwsConfig
    tags: Mapping[str, str]
    network: NetworkConfig
    cluster: ClusterConfig
    compute: ComputeConfig
    addons: AddonsConfig
    inference: InferenceConfig

    @property
    def stack_prefix(self) -> str:
        """Prefix of every CloudFormation stack name (the cluster name: one set of stacks per cluster)."""
        return self.cluster.name


def _aws_from_section(s: Section) -> AwsConfig:
    account = s.raw("account", None)
    if account is not None:
        account = str(account)
        if not _ACCOUNT.match(account):
            raise ConfigError(
                s.key("account"), account, "a 12-digit AWS account id, or null for the CLI's account"
            )
    region = s.string("region", AwsConfig.region)
    if not _REGION.match(region):
        raise ConfigError(s.key("region"), region, "an AWS region name such as us-west-2")
    s.reject_unknown()
    return AwsConfig(account=account, region=region)


def _tags(root: Section, env_name: str) -> Mapping[str, str]:
    tags = root.string_map("tags", {})
    for key, value in tags.items():
        if not _TAG_KEY.match(key) or len(value) > 256:
            raise ConfigError(
                root.key(f"tags.{key}"),
                value,
                "tag keys of 1-128 characters not starting with 'aws:', values up to 256 characters",
            )
    return MappingProxyType({**tags, "environment": env_name})


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any], path: str) -> dict[str, Any]:
    for key, value in overlay.items():
        dotted = f"{path}.{key}" if path else key
        if isinstance(value, Mapping):
            current = base.get(key)
            if current is None:
                current = {}
            if not isinstance(current, dict):
                raise ConfigError(dotted, dict(value), f"the same type as the base value {current!r}")
            base[key] = _deep_merge(current, value, dotted)
        else:
            base[key] = copy.deepcopy(value)
    return base


#: Top-level sections with their own loader, global rather than per environment (``pipeline``:
#: stacks/config/pipeline.py applies its own dotted overrides).
GLOBAL_SECTIONS: tuple[str, ...] = ("pipeline",)


def _is_override_key(key: str) -> bool:
    # Dotted keys are ours; CDK's own context keys start with "@" or contain ":".
    if key.split(".", 1)[0] in GLOBAL_SECTIONS:
        return False
    return "." in key and not key.startswith("@") and ":" not in key


def merged_context(context: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Apply ``environments[env]`` and dotted overrides to the base sections: (env name, merged dict)."""
    merged: dict[str, Any] = {}
    for name in SECTIONS:
        value = context.get(name)
        if value is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(name, value, "a JSON object")
            merged[name] = copy.deepcopy(dict(value))

    environments = context.get("environments") or {}
    if not isinstance(environments, Mapping):
        raise ConfigError("environments", environments, "a JSON object of environment name -> sections")
    env_name = context.get("env", DEFAULT_ENV)
    if environments or env_name != DEFAULT_ENV:
        if env_name not in environments:
            raise ConfigError("env", env_name, f"one of {sorted(environments)} (the keys of 'environments')")
        overlay = environments[env_name]
        if not isinstance(overlay, Mapping):
            raise ConfigError(f"environments.{env_name}", overlay, "a JSON object of sections")
        for name in overlay:
            if name not in SECTIONS:
                raise ConfigError(
                    f"environments.{env_name}.{name}", overlay[name], f"sections {list(SECTIONS)}"
                )
        _deep_merge(merged, overlay, "")

    for key in sorted(k for k in context if _is_override_key(k)):
        section, *rest = key.split(".")
        if section not in SECTIONS:
            raise ConfigError(key, context[key], f"a dotted key under one of the sections {list(SECTIONS)}")
        target = merged.setdefault(section, {})
        for part in rest[:-1]:
            nxt = target.get(part)
            if nxt is None:
                nxt = target[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(key, context[key], f"a key whose parent '{part}' is a JSON object")
            target = nxt
        target[rest[-1]] = context[key]
    return str(env_name), merged


def load_config(context: Mapping[str, Any]) -> AppConfig:
    """Validate the context (``app.node.get_all_context()``) into an :class:`AppConfig`.

    Raises :class:`ConfigError` naming the first bad key, its value and what is allowed.
    """
    env_name, merged = merged_context(context)
    root = Section(merged)
    aws = _aws_from_section(root.section("aws"))
    config = AppConfig(
        env_name=env_name,
        aws=aws,
        tags=_tags(root, env_name),
        network=_network.from_section(root.section("network"), aws.region),
        cluster=_cluster.from_section(root.section("cluster")),
        compute=_compute.from_section(root.section("compute")),
        addons=(addons := _addons.from_section(root.section("addons"))),
        inference=_inference.from_section(root.section("inference"), addons),
    )
    root.reject_unknown()
    _addons.check_against_cluster(
        config.addons,
        gpu_capacity=config.compute.gpu_capacity.value,
        kubernetes_version=config.cluster.kubernetes_version,
    )
    _inference.check_against_addons(
        config.inference, config.addons, gpu_capacity=config.compute.gpu_capacity.value
    )
    return config
