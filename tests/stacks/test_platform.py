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
    config = load_config(
        {
            **cdk_json_context(),
            "env": "prod",
            "aws.account": "222222222222",
            "cluster.adminPrincipalArns": "arn:aws:iam::222222222222:role/platform-admin",
        }
    )
    stacks = build_app(stage, config, today=TEST_TODAY)
    assert stacks.network.node.path == "Prod/Network"
    assert stacks.cluster.node.path == "Prod/Cluster"
    assert stacks.cluster.stack_name == "llama-eks-prod-cluster"
    assert stacks.cluster.account == "222222222222"
    assert stacks.cluster.cluster.vpc is stacks.network.vpc


def test_main_exits_with_the_config_error() -> None:
    # What `cdk synth -c cluster.kubernetesVersion=1.31` runs, minus the CLI: a one-line error, no traceback,
    # that says why a new 1.31 cluster cannot be made.
    from app import main

    with pytest.raises(SystemExit) as exit_info:
        main(cdk.App(context={**cdk_json_context(), "cluster.kubernetesVersion": "1.31"}))
    assert str(exit_info.value) == (
        "cdk.json / -c context: Invalid config 'cluster.kubernetesVersion': '1.31'. Allowed: one of "
        "['1.32', '1.33', '1.34', '1.35', '1.36'] (a string): EKS extended support for 1.31 ended "
        "2026-11-26, EKS no longer creates 1.31 clusters and upgrades existing ones; an existing cluster "
        "moves one minor version at a time (a 1.31 cluster: set the next one)."
    )


def test_main_refuses_a_prod_deploy_nobody_can_administer() -> None:
    from app import main

    with pytest.raises(SystemExit) as exit_info:
        main(cdk.App(context={**cdk_json_context(), "env": "prod"}))
    assert str(exit_info.value).startswith(
        "cdk.json / -c context: Invalid config 'cluster.adminPrincipalArns': []. Allowed: at least one IAM "
        "role or user ARN in a production environment (`production: true`; nobody else gets kubectl access): "
        "find yours with `aws sts get-caller-identity`"
    )
