"""What ``app.py`` builds, per ``deployMode``: one environment's stacks, or the pipeline that deploys them.

``direct`` (a laptop ``cdk deploy``): ``build_app``'s stacks of the environment ``-c env=...``.
``pipeline``: only the PipelineStack, whose stages call the same ``build_app``. Never both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from constructs import Construct

from config import load_config, load_pipeline_config
from stacks.pipeline.compose import build_pipeline
from stacks.pipeline.stack import PipelineStack
from stacks.platform import Stacks, build_app


def build_for_mode(
    scope: Construct, context: Mapping[str, Any], *, default_account: str | None = None
) -> PipelineStack | Stacks:
    """Build what ``deployMode`` asks for under ``scope``. ``default_account``: the account of a direct
    deploy whose ``aws.account`` is null (the CLI's; a pipeline's stages always name theirs)."""
    pipeline = load_pipeline_config(context)
    if pipeline.enabled:
        return build_pipeline(scope, context, pipeline)
    return build_app(scope, load_config(context), default_account=default_account)
