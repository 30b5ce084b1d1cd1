"""The app's one typed, frozen configuration, loaded once in ``app.py`` from ``cdk.json`` context.

One pydantic model per section (``network``, ``cluster``, ``compute``, ``addons``, ``inference``; the
global ``deployMode``/``pipeline`` in :mod:`config.pipeline`), each key declared once with its type, range,
default and description; docs/configuration.md's key tables are generated from them (``make docs``).
"""

from __future__ import annotations

from .addons import AddonsConfig
from .app import DEFAULT_ENV, SECTIONS, AppConfig, AwsConfig, load_config, merged_context
from .cluster import ClusterConfig, EndpointAccess
from .compute import ComputeConfig, GpuCapacity, NodegroupConfig, Taint
from .errors import ConfigError
from .inference import InferenceConfig
from .names import NODE_CLASS_LABEL
from .network import NatGateways, NetworkConfig
from .pipeline import PipelineConfig, load_pipeline_config
from .versions import DEFAULT_KUBERNETES_VERSION, KUBERNETES_VERSIONS, KubernetesVersionInfo

__all__ = [
    "DEFAULT_ENV",
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
    "PipelineConfig",
    "Taint",
    "load_config",
    "load_pipeline_config",
    "merged_context",
]
