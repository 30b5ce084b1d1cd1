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

from .addons import AddonsConfig, karpenter_compatibility_problem
from .base import ACCOUNT_PATTERN, ConfigModel, Given, Region, StrMap, with_defaults
from .cluster import ClusterConfig
from .compute import ComputeConfig, GpuCapacity
from .errors import ConfigError, Invalid, matches, raise_all
from .exposure import exposure_problems
from .inference import (
    MAX_SPOT_GRACE_SECONDS,
    PRODUCTION_MIN_REPLICAS,
    SPOT_NOTICE_SECONDS,
    Accelerator,
    InferenceConfig,
    addon_problems,
)
from .network import DEFAULT_REGION, NetworkConfig, default_availability_zones

#: Top-level context keys that hold configuration of one environment (each a JSON object).
SECTIONS: tuple[str, ...] = ("aws", "tags", "network", "cluster", "compute", "addons", "inference")
#: Top-level sections with their own loader, global rather than per environment (config/pipeline.py).
GLOBAL_SECTIONS: tuple[str, ...] = ("pipeline",)
DEFAULT_ENV = "dev"
#: The environment whose safe defaults and rules are the production ones (two replicas, TLS when
#: internet-facing, ...). Other environments get the dev defaults.
PRODUCTION_ENV = "prod"

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
    aws: AwsConfig = Field(default_factory=AwsConfig, description="Where the stacks deploy.")
    tags: StrMap = Field(
        default_factory=lambda: {"project": "llama-eks"},
        validate_default=True,
        description="Tags on every resource of every stack; `environment=<env>` is always added.",
    )
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="The VPC.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="The EKS control plane.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig, description="Nodegroups and GPU capacity.")
    addons: AddonsConfig = Field(default_factory=AddonsConfig, description="The cluster add-ons.")
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, validate_default=True, description="The inference service."
    )

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

    @field_validator("inference", mode="before")
    @classmethod
    def _inference_for_the_addons(cls, value: Any, info: ValidationInfo) -> Any:
        # Defaults of keys left unset follow what the add-ons install (autoscaling, monitoring) and the
        # environment (replicas in prod).
        production = info.data.get("env_name", DEFAULT_ENV) == PRODUCTION_ENV
        return InferenceConfig.model_validate(
            with_defaults(value, {}), context={"addons": info.data.get("addons"), "production": production}
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
        if inference.termination_grace_seconds > MAX_SPOT_GRACE_SECONDS and self._serving_on_spot():
            problems.append(
                Invalid(
                    f"an integer <= {MAX_SPOT_GRACE_SECONDS} while the serving capacity can be spot: a spot "
                    f"interruption gives {SPOT_NOTICE_SECONDS} s notice and Karpenter needs about "
                    f"{SPOT_NOTICE_SECONDS - MAX_SPOT_GRACE_SECONDS} s of it to start the drain (lower "
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

    @property
    def production(self) -> bool:
        """Whether this is the production environment (``env=prod``): its defaults and rules apply."""
        return self.env_name == PRODUCTION_ENV

    @property
    def stack_prefix(self) -> str:
        """Prefix of every CloudFormation stack name (the cluster name: one set of stacks per cluster)."""
        return self.cluster.name


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

    Raises :class:`ConfigError` naming every bad key, its value and what is allowed.
    """
    env_name, merged = merged_context(context)
    return AppConfig.load({"env": env_name, **merged})
