"""Read synthesized add-on templates: resolve intrinsics to readable placeholders, find resources."""

from __future__ import annotations

import json
from typing import Any

#: Pseudo parameters as the tests' stand-ins (the test env is 111111111111 / us-west-2).
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-west-2",
    "AWS::AccountId": "111111111111",
    "AWS::URLSuffix": "amazonaws.com",
}


def resolve(value: Any) -> Any:
    """Fold Fn::Join / Ref / Fn::GetAtt into strings: ``{Ref: X}`` -> ``<X>``, GetAtt -> ``<X.Attr>``."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return PSEUDO.get(arg, f"<{arg}>")
        if key == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if key == "Fn::GetStackOutput":
            return f"<{arg['StackName']}:{arg['OutputName']}>"
        if key == "Fn::Join":
            return arg[0].join(str(resolve(p)) for p in arg[1])
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def one(template: dict[str, Any], type_: str, prefix: str) -> tuple[str, dict[str, Any]]:
    """The single resource of ``type_`` whose logical id starts with ``prefix``."""
    found = [(k, v) for k, v in resources(template, type_).items() if k.startswith(prefix)]
    assert len(found) == 1, f"expected one {type_} {prefix}*, found {[k for k, _ in found]}"
    return found[0]


def helm_releases(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Helm releases by release name, with ``Values`` parsed (tokens as placeholders)."""
    out = {}
    for logical_id, res in resources(template, "Custom::AWSCDK-EKS-HelmChart").items():
        props = resolve(res["Properties"])
        props["Values"] = json.loads(props["Values"]) if "Values" in props else None
        props["LogicalId"] = logical_id
        props["DependsOn"] = res.get("DependsOn", [])
        out[props["Release"]] = props
    return out


def manifests(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Kubernetes manifests by logical id (tokens resolved to placeholders)."""
    return {
        logical_id: json.loads(resolve(res["Properties"]["Manifest"]))
        for logical_id, res in resources(template, "Custom::AWSCDK-EKS-KubernetesResource").items()
    }


def kubectl_invocation_timeouts(
    by_stack_name: dict[str, dict[str, Any]], service_token: Any
) -> dict[str, int]:
    """Timeouts (s) of the Lambda functions one kubectl custom resource runs in, read from the templates
    (``by_stack_name``: CloudFormation stack name -> template).

    ``service_token`` (a HelmChart's ``ServiceToken``) names the provider framework's onEvent function, an
    output of the stack that owns it; that function invokes the kubectl handler (its
    ``USER_ON_EVENT_FUNCTION_ARN``) synchronously, so the resource must finish inside both.
    """

    def function(template: dict[str, Any], ref: Any) -> tuple[str, dict[str, Any]]:
        logical_id, attribute = ref["Fn::GetAtt"]
        assert attribute == "Arn", ref
        res = template["Resources"][logical_id]
        assert res["Type"] == "AWS::Lambda::Function", (logical_id, res["Type"])
        return logical_id, res

    output = service_token["Fn::GetStackOutput"]
    owner = by_stack_name[output["StackName"]]
    framework_id, framework = function(owner, owner["Outputs"][output["OutputName"]]["Value"])
    handler_ref = framework["Properties"]["Environment"]["Variables"]["USER_ON_EVENT_FUNCTION_ARN"]
    handler_id, handler = function(owner, handler_ref)
    return {
        framework_id: int(framework["Properties"]["Timeout"]),
        handler_id: int(handler["Properties"]["Timeout"]),
    }
