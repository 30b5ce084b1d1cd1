"""app.build_app composes the same stacks under a cdk.Stage (pipelines), with the same construct ids."""

from __future__ import annotations

import aws_cdk as cdk
import pytest

from config import load_config
from stacks.platform import build_app
from tests.conftest import TEST_TODAY, cdk_json_context


def test_build_app_inside_a_stage_keeps_ids_and_names() -> None:
    app = cdk.App(context=cdk_json_context())
    stage = cdk.Stage(app, "Prod", env=cdk.Environment(account="222222222222", region="us-west-2"))
    config = load_config({**cdk_json_context(), "env": "prod", "aws.account": "222222222222"})
    stacks = build_app(stage, config, today=TEST_TODAY)
    assert stacks.network.node.path == "Prod/Network"
    assert stacks.cluster.node.path == "Prod/Cluster"
    assert stacks.cluster.stack_name == "llama-eks-prod-cluster"
    assert stacks.cluster.account == "222222222222"
    assert stacks.cluster.cluster.vpc is stacks.network.vpc


def test_main_exits_with_the_config_error() -> None:
    # What `cdk synth -c cluster.kubernetesVersion=1.30` runs, minus the CLI: a one-line error, no traceback.
    from app import main

    with pytest.raises(SystemExit) as exit_info:
        main(cdk.App(context={**cdk_json_context(), "cluster.kubernetesVersion": "1.30"}))
    assert str(exit_info.value) == (
        "cdk.json / -c context: Invalid config 'cluster.kubernetesVersion': '1.30'. Allowed: one of "
        "['1.31', '1.32', '1.33', '1.34', '1.35'] (a string)."
    )
