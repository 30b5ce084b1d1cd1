"""The app's one configuration: every section, read once from ``cdk.json`` context by :func:`load_config`.

Precedence, lowest first: the code defaults, the base sections of the context, ``environments[env]``
(deep merge; lists replace), then single keys given as dotted context keys, e.g.
``-c cluster.kubernetesVersion=1.34``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict, ValidationInfo, field_validator, model_validator

from .addons import (
    INTERRUPTION_REACTION_SECONDS,
    SPOT_DRAIN_SECONDS,
    SPOT_NOTICE_SECONDS,
    AddonsConfig,
    disrupted_at_once,
    duration_seconds,
    karpenter_compatibility_problem,
)
from .base import ACCOUNT_PATTERN, PRODUCTION, Bool, ConfigModel, Given, Region, StrMap, with_defaults
from .chat_ui import ChatUiConfig
from .cluster import ClusterConfig
from .cluster import production_problems as cluster_production_problems
from .compute import KUBERNETES_VERSION_CONTEXT, ComputeConfig, GpuCapacity
from .compute import production_problems as compute_production_problems
from .errors import ConfigError, Invalid, matches, raise_all
from .exposure import exposure_problems
from .inference import PRODUCTION_MIN_REPLICAS, Accelerator, Autoscaler, InferenceConfig, addon_problems
from .network import DEFAULT_REGION, NetworkConfig, default_availability_zones

#: Top-level context keys that hold configuration of one environment (each a JSON object).
SECTIONS: tuple[str, ...] = (
    "aws",
    "tags",
    "network",
    "cluster",
    "compute",
    "addons",
    "inference",
    "chatUi",
)
#: Top-level sections with their own loader, global rather than per environment (config/pipeline.py).
GLOBAL_SECTIONS: tuple[str, ...] = ("pipeline",)
#: Top-level keys that are single values, set at the top or per environment (`environments[env]` wins).
ENVIRONMENT_VALUES: tuple[str, ...] = (PRODUCTION,)
DEFAULT_ENV = "dev"
_TAG_KEY = re.compile(r"(?!aws:)[\w .:/=+@-]{1,128}")
_TAG_ALLOWED = "tag keys of 1-128 characters not starting with 'aws:', values up to 256 characters"


def _account_as_text(value: Any) -> Any:
    # A JSON number (111111111111) is as good as the string.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class AwsConfig(ConfigModel):
    """Where the stacks deploy."""

    path = "aws"

    account: (
        Annotated[
            str,
            BeforeValidator(_account_as_text),
            Strict(),
            matches(ACCOUNT_PATTERN, "a 12-digit AWS account id, or null for the CLI's account"),
        ]
        | None
    ) = Field(
        None,
        description="A 12-digit account id, or `null`: the CLI's current account (`CDK_DEFAULT_ACCOUNT`; "
        "synth needs no credentials either way). Required per stage in pipeline mode.",
    )
    region: Region = Field(
        DEFAULT_REGION,
        description="The AWS region. Changing it requires `network.availabilityZones` of that region.",
    )


class AppConfig(ConfigModel):
    """Everything the stacks need, validated. Constructs receive parts of it, never the raw context."""

    env_name: str = Field(DEFAULT_ENV, alias="env", description="The environment (a key of `environments`).")
    production: Bool = Field(
        False,
        description="A production environment (cdk.json's `prod` sets it): defaults become the safe "
        "choices (e.g. a private cluster endpoint) and rules refuse unsafe values (e.g. no cluster admin). "
        "Set it per environment, in `environments[env]`.",
    )
    aws: AwsConfig = Field(default_factory=AwsConfig, description="Where the stacks deploy.")
    tags: StrMap = Field(
        default_factory=lambda: {"project": "llama-eks"},
        validate_default=True,
        description="Tags on every resource of every stack; `environment=<env>` is always added.",
    )
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="The VPC.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The EKS control plane.")
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, validate_default=True, description="Nodegroups and GPU capacity."
    )
    addons: AddonsConfig = Field(default_factory=AddonsConfig, description="The cluster add-ons.")
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, validate_default=True, description="The inference service."
    )
    chat_ui: ChatUiConfig = Field(
        default_factory=ChatUiConfig, validate_default=True, description="The chat UI in front of the model."
    )

    @classmethod
    def load(cls, data: Any = None, *, context: Mapping[str, Any] | None = None) -> AppConfig:
        """Validate the whole configuration; every section sees in its validation context whether this is a
        production environment (its defaults and rules depend on it)."""
        data = {} if data is None else data
        context = dict(context or {})
        if isinstance(data, Mapping):
            context.setdefault(PRODUCTION, _as_bool(data.get(PRODUCTION, False)))
        return super().load(data, context=context)

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        region = given.value("aws").region
        return {"network": {"availabilityZones": list(default_availability_zones(region))}}

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: Mapping[str, str], info: ValidationInfo) -> Mapping[str, str]:
        raise_all(
            [
                Invalid(_TAG_ALLOWED, key=f"tags.{key}", value=value)
                for key, value in tags.items()
                if not _TAG_KEY.fullmatch(key) or len(value) > 256
            ]
        )
        return {**tags, "environment": info.data.get("env_name", DEFAULT_ENV)}

    @field_validator("compute", mode="before")
    @classmethod
    def _compute_for_the_cluster(cls, value: Any, info: ValidationInfo) -> Any:
        # The nodegroups' AMI release defaults and rules follow the cluster's Kubernetes version.
        cluster = info.data.get("cluster")
        context = dict(info.context or {})
        if isinstance(cluster, ClusterConfig):
            context[KUBERNETES_VERSION_CONTEXT] = cluster.kubernetes_version
        return ComputeConfig.model_validate(with_defaults(value, {}), context=context)

    @field_validator("inference", mode="before")
    @classmethod
    def _inference_for_the_addons(cls, value: Any, info: ValidationInfo) -> Any:
        # Defaults of keys left unset follow what the add-ons install (autoscaling, monitoring) and the
        # environment (replicas in prod).
        production = bool(info.data.get(PRODUCTION, False))
        return InferenceConfig.model_validate(
            with_defaults(value, {}), context={"addons": info.data.get("addons"), "production": production}
        )

    @field_validator("chat_ui", mode="before")
    @classmethod
    def _chat_ui_for_the_environment(cls, value: Any, info: ValidationInfo) -> Any:
        # The VPA's default follows the VPA add-on; replicas follow the environment.
        production = bool(info.data.get(PRODUCTION, False))
        return ChatUiConfig.model_validate(
            with_defaults(value, {}), context={"production": production, "addons": info.data.get("addons")}
        )

    @model_validator(mode="after")
    def _cross_section_rules(self) -> AppConfig:
        problems = []
        region = self.aws.region
        azs = [az for az in self.network.availability_zones if not _in_region(az, region)]
        if azs:
            problems.append(
                Invalid(
                    f"availability zone names of region {region}, such as {region}a",
                    key="network.availabilityZones",
                    value=azs[0],
                )
            )
        karpenter = self.addons.karpenter
        if self.compute.gpu_capacity is GpuCapacity.KARPENTER and not karpenter.enabled:
            problems.append(
                Invalid(
                    "true when compute.gpuCapacity is 'karpenter'",
                    key="addons.karpenter.enabled",
                    value=False,
                )
            )
        if karpenter.enabled:
            problem = karpenter_compatibility_problem(self.cluster.kubernetes_version, karpenter.version)
            if problem is not None:
                problems.append(problem)
        problems += addon_problems(self.inference, self.addons)
        problems += self._inference_serving_problems()
        problems += self._serving_pool_problems()
        # cluster, network, compute (issue 11): what a production environment refuses.
        if self.production:
            problems += cluster_production_problems(self.cluster)
            problems += compute_production_problems(self.compute)
        problems += self._chat_ui_problems()
        problems += self._vpa_problems()
        raise_all(problems)
        return self

    # --- inference serving (issue 11: disruption, rollouts, TLS) ----------------------------------------

    def _inference_serving_problems(self) -> list[Invalid]:
        inference, compute = self.inference, self.compute
        problems = exposure_problems(inference.exposure, production=self.production, region=self.aws.region)
        fewest = inference.fewest_replicas
        if self.production and fewest < PRODUCTION_MIN_REPLICAS:
            problems.append(
                Invalid(
                    f"an integer >= {PRODUCTION_MIN_REPLICAS} in env=prod: with one replica every node "
                    "disruption (spot interruption, node upgrade, zone outage) is an outage",
                    key=inference.fewest_replicas_key,
                    value=fewest,
                )
            )
        if inference.termination_grace_seconds > SPOT_DRAIN_SECONDS and self._serving_on_spot():
            problems.append(
                Invalid(
                    f"an integer <= {SPOT_DRAIN_SECONDS} while the serving capacity can be spot: a spot "
                    f"interruption gives {SPOT_NOTICE_SECONDS} s notice and Karpenter needs about "
                    f"{INTERRUPTION_REACTION_SECONDS} s of it to start the drain (lower "
                    "inference.server.drainTimeoutSeconds or inference.preStopSeconds, or use on-demand "
                    "capacity)",
                    key="inference.terminationGracePeriodSeconds",
                    value=inference.termination_grace_seconds,
                )
            )
        if inference.accelerator is Accelerator.GPU:
            if compute.gpu_capacity is GpuCapacity.KARPENTER:
                # A rolling update runs one pod more (maxSurge 1) than the autoscaler's maximum.
                needed = inference.most_replicas + 1
                if self.addons.karpenter.gpu_limit < needed:
                    problems.append(
                        Invalid(
                            f"an integer >= {needed}: inference's most replicas ({inference.most_replicas}, "
                            "one GPU each) plus one for a rolling update's extra pod",
                            key="addons.karpenter.gpuLimit",
                            value=self.addons.karpenter.gpu_limit,
                        )
                    )
            elif compute.gpu_nodegroup.desired_size < fewest:
                problems.append(
                    Invalid(
                        f"an integer >= {fewest} ({inference.fewest_replicas_key}: one GPU node per replica; "
                        "no autoscaler adds nodes to the nodegroup)",
                        key="compute.gpuNodegroup.desiredSize",
                        value=compute.gpu_nodegroup.desired_size,
                    )
                )
        return problems

    # --- chat UI (issue 15) ------------------------------------------------------------------------------

    def _chat_ui_problems(self) -> list[Invalid]:
        chat_ui = self.chat_ui
        if not chat_ui.enabled:
            return []  # nothing of the UI is rendered
        problems = exposure_problems(chat_ui.exposure, production=self.production, region=self.aws.region)
        fewest = chat_ui.autoscaling.min_replicas
        if self.production and fewest < PRODUCTION_MIN_REPLICAS:
            problems.append(
                Invalid(
                    f"an integer >= {PRODUCTION_MIN_REPLICAS} in env=prod: with one replica every node "
                    "disruption (spot interruption, node upgrade, zone outage) takes the chat page down",
                    key="chatUi.autoscaling.minReplicas",
                    value=fewest,
                )
            )
        if "metrics-server" not in self.cluster.managed_addons:
            problems.append(
                Invalid(
                    "a list that includes 'metrics-server' while chatUi.enabled is true (the chat UI's HPA "
                    "scales on CPU utilisation from the metrics API)",
                    key="cluster.managedAddons",
                    value=list(self.cluster.managed_addons),
                )
            )
        if chat_ui.vpa.enabled and not self.addons.vpa.enabled:
            problems.append(
                Invalid(
                    "false while addons.vpa.enabled is false (the VerticalPodAutoscaler CRDs and recommender "
                    "come from that add-on)",
                    key="chatUi.vpa.enabled",
                    value=True,
                )
            )
        return problems

    # --- VPA add-on (issue 15) ----------------------------------------------------------------------------

    def _vpa_problems(self) -> list[Invalid]:
        if self.addons.vpa.enabled and "metrics-server" not in self.cluster.managed_addons:
            return [
                Invalid(
                    "a list that includes 'metrics-server' while addons.vpa.enabled is true (the VPA "
                    "recommender reads pod usage from the metrics API)",
                    key="cluster.managedAddons",
                    value=list(self.cluster.managed_addons),
                )
            ]
        return []

    def _serving_on_spot(self) -> bool:
        """Whether the inference pods can run on spot capacity (and so get a 2-minute interruption)."""
        compute, karpenter = self.compute, self.addons.karpenter
        if self.inference.accelerator is Accelerator.GPU:
            if compute.gpu_capacity is GpuCapacity.KARPENTER:
                return "spot" in karpenter.capacity_types
            return compute.gpu_nodegroup.capacity_type == "SPOT"
        if karpenter.enabled and karpenter.general_purpose_pool:
            return True  # the general-purpose NodePool takes spot and on-demand (charts/karpenter.py)
        return compute.system_nodegroup.capacity_type == "SPOT"

    # --- add-ons area: the Karpenter NodePool that serves inference -------------------------------------

    def _serving_pool_problems(self) -> list[Invalid]:
        """The NodePool that runs the inference pods must let them drain (the node's grace period) and must
        not disrupt every serving node at once."""
        karpenter, inference = self.addons.karpenter, self.inference
        gpu = inference.accelerator is Accelerator.GPU
        if not karpenter.enabled or (gpu and self.compute.gpu_capacity is not GpuCapacity.KARPENTER):
            return []
        if not gpu and not karpenter.general_purpose_pool:
            return []  # CPU pods on the system nodegroup
        grace = inference.termination_grace_seconds
        problems = []
        # The spot notice bounds the grace period too: _inference_serving_problems.
        node_grace = duration_seconds(karpenter.termination_grace_period)
        if node_grace < grace:
            problems.append(
                Invalid(
                    f"a duration of at least inference.terminationGracePeriodSeconds ({grace} s): Karpenter "
                    "deletes pods early so that they end before the node's grace period does",
                    key="addons.karpenter.terminationGracePeriod",
                    value=karpenter.termination_grace_period,
                )
            )
        autoscaling = inference.autoscaling
        serving = inference.replicas if autoscaling.mode is Autoscaler.NONE else autoscaling.min_replicas
        budget = karpenter.disruption_budget
        if gpu and serving >= 2 and disrupted_at_once(budget, serving) >= serving:
            problems.append(
                Invalid(
                    f"a budget that disrupts fewer than {serving} nodes at once (the serving replicas' GPU "
                    f"nodes), such as 1: {budget!r} may take every serving node together",
                    key="addons.karpenter.disruptionBudget",
                    value=budget,
                )
            )
        return problems

    @property
    def stack_prefix(self) -> str:
        """Prefix of every CloudFormation stack name (the cluster name: one set of stacks per cluster)."""
        return self.cluster.name


def _as_bool(value: Any) -> bool:
    # The field reports a value that is not a boolean; the context only needs a clear yes.
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _in_region(az: str, region: str) -> bool:
    # AZ names are the region plus one letter (us-west-2a); local/wavelength zones are not for EKS nodes.
    return az.startswith(region) and len(az) == len(region) + 1 and az[-1].isalpha()


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


def _is_override_key(key: str) -> bool:
    # Dotted keys are ours; CDK's own context keys start with "@" or contain ":".
    if key.split(".", 1)[0] in GLOBAL_SECTIONS:
        return False
    return "." in key and not key.startswith("@") and ":" not in key


def _merge_environment(merged: dict[str, Any], environments: Any, env_name: Any) -> None:
    """Deep-merge ``environments[env_name]`` into ``merged`` (nothing for the default env without any)."""
    if not isinstance(environments, Mapping):
        raise ConfigError("environments", environments, "a JSON object of environment name -> sections")
    if not environments and env_name == DEFAULT_ENV:
        return
    if env_name not in environments:
        raise ConfigError("env", env_name, f"one of {sorted(environments)} (the keys of 'environments')")
    overlay = environments[env_name]
    if not isinstance(overlay, Mapping):
        raise ConfigError(f"environments.{env_name}", overlay, "a JSON object of sections")
    for name in overlay:
        if name not in SECTIONS and name not in ENVIRONMENT_VALUES:
            raise ConfigError(
                f"environments.{env_name}.{name}",
                overlay[name],
                f"sections {list(SECTIONS)} or the keys {list(ENVIRONMENT_VALUES)}",
            )
    _deep_merge(merged, overlay, "")


def merged_context(context: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Apply ``environments[env]`` and dotted overrides to the base sections: (env name, merged dict)."""
    merged: dict[str, Any] = {}
    for name in SECTIONS:
        value = context.get(name)
        if value is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(name, value, "a JSON object")
            merged[name] = copy.deepcopy(dict(value))
    for name in ENVIRONMENT_VALUES:
        if name in context:
            merged[name] = context[name]

    env_name = context.get("env", DEFAULT_ENV)
    _merge_environment(merged, context.get("environments") or {}, env_name)

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

    Raises :class:`ConfigError` naming every bad key, its value and what is allowed.
    """
    env_name, merged = merged_context(context)
    return AppConfig.load({"env": env_name, **merged})
