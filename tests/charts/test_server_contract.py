"""The chart <-> model server contract: every MODEL_SERVER_* variable the chart sets is a setting the model
server reads, and its value parses there.

The server container's variables are fields of ``model_server.settings.Settings``; the init container's
(``model_server fetch``) are fields of ``model_server.fetch.FetchSettings``. Each is validated with the
field's own type and constraints, exactly as pydantic-settings reads it from the environment. Every
``inference.server`` key names such a field (one mapping: ``ServerConfig.environment``).
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from config.inference import InferenceConfig, ServerConfig, Setting
from config.names import DEFAULT_MODEL_URI
from tests.charts.manifests import Manifests, config_of, pod_spec, render

settings = pytest.importorskip("model_server.settings", reason="model server deps not installed (make deps)")
fetch = pytest.importorskip("model_server.fetch", reason="model server deps not installed (make deps)")

PREFIX = "MODEL_SERVER_"


def contract_problems(env: dict[str, str], model: type[BaseModel]) -> list[str]:
    """Why ``env`` would not be read as intended by ``model`` (a pydantic-settings class): unknown
    variables, and values the field's type or constraints reject."""
    problems = []
    for name, value in env.items():
        field = model.model_fields.get(name.removeprefix(PREFIX).lower()) if name.startswith(PREFIX) else None
        if field is None:
            problems.append(f"{name}: not a field of {model.__name__}")
            continue
        try:
            TypeAdapter(Annotated[field.annotation, field]).validate_python(value)
        except ValidationError as err:
            problems.append(f"{name}={value!r}: {err.errors()[0]['msg']}")
    return problems


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def _containers(m: Manifests) -> tuple[dict[str, str], dict[str, str]]:
    spec = pod_spec(m)
    (server,) = [c for c in spec["containers"] if c["name"] == "server"]
    (init,) = spec["initContainers"]
    return _env(server), _env(init)


def test_every_variable_of_every_variant_is_a_setting_that_parses(rendered: dict[str, Manifests]) -> None:
    for name, m in rendered.items():
        server, init = _containers(m)
        assert contract_problems(server, settings.Settings) == [], name
        assert contract_problems(init, fetch.FetchSettings) == [], name


def test_the_server_gets_every_server_key() -> None:
    config = config_of(
        {
            "accelerator": "cpu",
            "server": {"maxConcurrency": 8, "maxQueue": 0, "contextTokens": 4096, "logLevel": "debug"},
            "autoscaling": {"mode": "hpa"},
        }
    )
    server, _ = _containers(render(config))
    assert server.items() >= config.server.environment().items()
    assert (server["MODEL_SERVER_MAX_CONCURRENCY"], server["MODEL_SERVER_MAX_QUEUE"]) == ("8", "0")
    assert (server["MODEL_SERVER_N_CTX"], server["MODEL_SERVER_LOG_LEVEL"]) == ("4096", "debug")
    assert server["MODEL_SERVER_N_THREADS"] == "4"  # the CPU variant's limit
    assert contract_problems(server, settings.Settings) == []


def test_every_server_key_names_a_setting() -> None:
    for name, field in ServerConfig.model_fields.items():
        (setting,) = [m for m in field.metadata if isinstance(m, Setting)]
        assert setting.field in settings.Settings.model_fields, f"inference.server.{name}: {setting.field}"


def test_the_check_fails_on_what_the_server_would_not_read() -> None:
    assert contract_problems({"MODEL_SERVER_MAX_CONCURENCY": "4"}, settings.Settings) == [
        "MODEL_SERVER_MAX_CONCURENCY: not a field of Settings"
    ]
    (problem,) = contract_problems({"MODEL_SERVER_MAX_QUEUE": "-1"}, settings.Settings)
    assert problem.startswith("MODEL_SERVER_MAX_QUEUE='-1': Input should be greater than or equal to 0")
    (problem,) = contract_problems({"MODEL_SERVER_LOG_LEVEL": "verbose"}, settings.Settings)
    assert problem.startswith("MODEL_SERVER_LOG_LEVEL='verbose'")


def test_the_drain_budget_reaches_server_nlb_and_grace_period() -> None:
    config = InferenceConfig.load({"server": {"drainTimeoutSeconds": 90}, "preStopSeconds": 10})
    m = render(config)
    server, _ = _containers(m)
    assert server["MODEL_SERVER_DRAIN_TIMEOUT_S"] == "90"
    # Grace: preStop + drain + 10 s for the server's cancel and close after the drain timeout.
    assert pod_spec(m)["terminationGracePeriodSeconds"] == 10 + 90 + 10
    # The NLB keeps a deregistered pod's connections for the whole grace period.
    (service,) = [x for x in m if x["kind"] == "Service"]
    attributes = service["metadata"]["annotations"][
        "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"
    ]
    assert "deregistration_delay.timeout_seconds=110" in attributes.split(",")


def test_the_default_model_is_the_one_the_fetcher_knows() -> None:
    assert DEFAULT_MODEL_URI == fetch.DEFAULT_MODEL_URI
