"""Composition of the pipeline mode: one ``LlamaStage`` per configured environment inside a PipelineStack.

``app.py`` calls :func:`build` and gets exactly one of the two shapes: the stacks of one environment
(``deployMode: direct``, a laptop ``cdk deploy``) or the PipelineStack alone (``deployMode: pipeline``),
whose stages are built by the same function. There is no mode that creates both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.config import AppConfig, load_config
from stacks.config.errors import ConfigError
from stacks.config.pipeline import PipelineConfig, load_pipeline_config
from stacks.pipeline_stack import PipelineStack, StageTarget
from stacks.stage import LlamaStage

#: ``build_app(scope, config) -> stacks`` of app.py: the one definition of an environment's stacks.
Builder = Callable[[Construct, AppConfig], Any]


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


def build_pipeline(
    scope: Construct, context: Mapping[str, Any], pipeline: PipelineConfig, build: Builder
) -> PipelineStack:
    """The PipelineStack with one LlamaStage per ``pipeline.stages`` entry, built by ``build``."""
    configs = stage_configs(context, pipeline)

    def factory(config: AppConfig) -> Callable[[Construct, str], cdk.Stage]:
        return lambda stage_scope, stage_id: LlamaStage(stage_scope, stage_id, config=config, build=build)

    targets = [
        StageTarget(env_name=name, account=str(c.aws.account), region=c.aws.region, create=factory(c))
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


def build(scope: Construct, context: Mapping[str, Any], build_direct: Builder) -> PipelineStack | Any:
    """Build what ``deployMode`` asks for under ``scope``: the pipeline, or one environment's stacks."""
    pipeline = load_pipeline_config(context)
    if pipeline.enabled:
        return build_pipeline(scope, context, pipeline, build_direct)
    return build_direct(scope, load_config(context))
