"""Composition of the pipeline mode: one ``LlamaStage`` per configured environment inside a PipelineStack."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from config import AppConfig, EndpointAccess, load_config
from config.errors import ConfigError
from config.pipeline import PipelineConfig, SmokeVia
from stacks.pipeline.stack import PipelineStack, StageTarget
from stacks.pipeline.stage import LlamaStage, SmokeAccess


def stage_configs(context: Mapping[str, Any], pipeline: PipelineConfig) -> dict[str, AppConfig]:
    """Each stage's validated ``AppConfig`` (environment overlay + ``-c`` overrides), in deploy order.

    Raises ConfigError for a stage that is not an environment, or whose environment has no account.
    """
    environments = context.get("environments") or {}
    configs: dict[str, AppConfig] = {}
    for name in pipeline.stages:
        if not isinstance(environments, Mapping) or name not in environments:
            known = sorted(environments) if isinstance(environments, Mapping) else []
            raise ConfigError("pipeline.stages", name, f"one of {known} (the keys of 'environments')")
        config = load_config({**context, "env": name})
        if config.aws.account is None:
            raise ConfigError(
                f"environments.{name}.aws.account",
                None,
                "a 12-digit AWS account id: a pipeline deploys each stage to an explicit account",
            )
        configs[name] = config
    return configs


def smoke_access(name: str, config: AppConfig, pipeline: PipelineConfig) -> SmokeAccess | None:
    """How the smoke test of stage ``name`` reaches its service, or None when smoke tests are off.

    ``auto``: the NLB hostname when it is internet-facing, else a CodeBuild project in the stage's VPC.
    Raises ConfigError when the chosen way cannot reach the stage.
    """
    smoke = pipeline.smoke_test
    if not smoke.enabled:
        return None
    inference = config.inference
    internet_facing = inference.exposure.scheme.value == "internet-facing"
    via = smoke.via
    if via is SmokeVia.AUTO:
        via = SmokeVia.ENDPOINT if internet_facing else SmokeVia.VPC
    if via is SmokeVia.ENDPOINT and not internet_facing:
        raise ConfigError(
            "pipeline.smokeTest.via",
            smoke.via.value,
            f"'auto' or 'vpc' for stage '{name}': its NLB is internal (inference.exposure.scheme), the "
            "pipeline's CodeBuild outside the VPC cannot reach it",
        )
    if via is SmokeVia.VPC and internet_facing:
        raise ConfigError(
            "pipeline.smokeTest.via",
            smoke.via.value,
            f"'auto' or 'endpoint' for stage '{name}': its NLB is internet-facing "
            "(inference.exposure.scheme), reached from the VPC only through the NAT gateways' addresses, "
            "which its source ranges do not name",
        )
    if via is SmokeVia.KUBERNETES_API:
        if config.cluster.endpoint_access is EndpointAccess.PRIVATE:
            raise ConfigError(
                "pipeline.smokeTest.via",
                smoke.via.value,
                f"'auto' or 'vpc' for stage '{name}': its cluster API is private (cluster.endpointAccess), "
                "the pipeline's CodeBuild outside the VPC cannot reach it",
            )
        if inference.api_key.enabled:
            raise ConfigError(
                "pipeline.smokeTest.via",
                smoke.via.value,
                f"'auto' or 'vpc' (or 'endpoint' with an internet-facing NLB) for stage '{name}': "
                "inference.apiKey.enabled needs the bearer header, which the API server's proxy does not "
                "pass on",
            )
    elif inference.api_key.enabled and not smoke.api_key_secret_arn:
        raise ConfigError(
            "pipeline.smokeTest.apiKeySecretArn",
            None,
            f"a Secrets Manager secret ARN holding the API key of stage '{name}' (inference.apiKey.enabled)",
        )
    wire = {SmokeVia.ENDPOINT: "endpoint", SmokeVia.VPC: "vpc"}.get(via, "kubernetes-api")
    return SmokeAccess(
        via=wire,
        pipeline_account=str(pipeline.account),
        pipeline_name=pipeline.name,
        ready_timeout_s=smoke.ready_timeout_s,
        predict_timeout_s=smoke.predict_timeout_s,
        api_key_secret_arn=smoke.api_key_secret_arn,
    )


def build_pipeline(scope: Construct, context: Mapping[str, Any], pipeline: PipelineConfig) -> PipelineStack:
    """The PipelineStack with one LlamaStage per ``pipeline.stages`` entry."""
    configs = stage_configs(context, pipeline)

    def factory(name: str, config: AppConfig) -> Callable[[Construct, str], cdk.Stage]:
        smoke = smoke_access(name, config, pipeline)  # validated before any construct exists
        return lambda stage_scope, stage_id: LlamaStage(stage_scope, stage_id, config=config, smoke=smoke)

    targets = [
        StageTarget(env_name=name, account=str(c.aws.account), region=c.aws.region, create=factory(name, c))
        for name, c in configs.items()
    ]
    return PipelineStack(
        scope,
        "Pipeline",
        config=pipeline,
        targets=targets,
        env=cdk.Environment(account=pipeline.account, region=pipeline.region),
        stack_name=pipeline.name,
        description=f"Self-mutating delivery pipeline of llama-eks: {' -> '.join(pipeline.stages)}",
    )
