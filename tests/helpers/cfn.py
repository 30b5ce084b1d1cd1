"""Validation harness every stack test reuses: cfn-lint, cdk-nag (3.x) findings, snapshot normalization.

cdk-nag 3.x is a CDK policy-validation plugin, not an Aspect: register packs with :func:`add_nag_plugins`
before ``app.synth()``; CDK writes ``validation-report.json`` into the cloud assembly with every
violation, acknowledged ones (``Validations.of(c).acknowledge(...)``) moved to ``suppressedViolations``.
Set :data:`NO_FAIL_CONTEXT` on the App so synth writes the report instead of raising, then read it with
:func:`validation_findings`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Context that makes synth write the validation report instead of failing on the first finding.
NO_FAIL_CONTEXT = {"@aws-cdk/core:failSynthOnValidationErrors": False}

#: cfn-lint rules ignored everywhere. W3005: CDK emits DependsOn that is also implied by a Ref/GetAtt.
CFN_LINT_IGNORED = ("W3005",)

AWS_SOLUTIONS = "AwsSolutions"
NIST_800_53_R5 = "NIST.800.53.R5"


def add_nag_plugins(app: Any) -> None:
    """Register cdk-nag AwsSolutions and NIST 800-53 R5 on ``app`` (before synth)."""
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks

    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app))


# ---------------------------------------------------------------- cfn-lint


def cfn_lint(template: dict[str, Any] | str | Path, *, regions: Iterable[str] = ("us-west-2",)) -> list[str]:
    """cfn-lint findings (errors and warnings, informational excluded) as ``'RULE path: message'`` lines."""
    from cfnlint.api import ManualArgs, lint

    if isinstance(template, Path):
        text = template.read_text()
    elif isinstance(template, dict):
        text = json.dumps(template)
    else:
        text = template
    matches = lint(text, config=ManualArgs(regions=list(regions), ignore_checks=list(CFN_LINT_IGNORED)))
    return [
        f"{m.rule.id} {'/'.join(str(p) for p in m.path)}: {m.message}"
        for m in matches
        if m.rule.id[0] in "EW"
    ]


# ---------------------------------------------------------------- cdk-nag / CDK validation report


@dataclass(frozen=True)
class Finding:
    plugin: str  # e.g. "AwsSolutions", "NIST.800.53.R5", "CloudFormation Validate"
    rule: str  # e.g. "AwsSolutions-IAM4[Policy::...]"
    severity: str
    construct_path: str
    logical_id: str
    template: str
    description: str
    acknowledged: bool
    reason: str = ""

    def __str__(self) -> str:
        where = f"{self.construct_path} ({self.logical_id})"
        return f"[{self.plugin}] {self.rule} at {where}: {self.description[:160]}"


def validation_findings(assembly_dir: str | Path) -> list[Finding]:
    """Every violation of every validation plugin in the assembly's ``validation-report.json``."""
    path = Path(assembly_dir) / "validation-report.json"
    if not path.exists():
        return []
    report = json.loads(path.read_text())
    findings = []
    for plugin in report.get("pluginReports", []):
        name = plugin["pluginName"]
        for key, acknowledged in (("violations", False), ("suppressedViolations", True)):
            for v in plugin.get(key, []):
                for c in v.get("violatingConstructs", []):
                    res = c.get("cloudFormationResource") or {}
                    findings.append(
                        Finding(
                            plugin=name,
                            rule=v["ruleName"],
                            severity=v.get("severity", ""),
                            construct_path=c.get("constructPath", ""),
                            logical_id=res.get("logicalId", ""),
                            template=res.get("templatePath", ""),
                            description=v.get("description", ""),
                            acknowledged=acknowledged,
                            reason=v.get("reason", "") if acknowledged else "",
                        )
                    )
    return findings


@dataclass(frozen=True)
class Acknowledgement:
    construct_path: str
    rule: str  # as given to Validations.acknowledge, e.g. "AwsSolutions-IAM4[Policy::...]"
    reason: str


def acknowledgements(assembly_dir: str | Path) -> list[Acknowledgement]:
    """Every ``Validations.of(c).acknowledge(...)`` in the assembly's stacks (from their metadata).

    cdk-nag 3 drops acknowledged findings before reporting, so the report alone cannot show them.
    """
    assembly = Path(assembly_dir)
    manifest = json.loads((assembly / "manifest.json").read_text())
    found = []
    for artifact in manifest.get("artifacts", {}).values():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        metadata = dict(artifact.get("metadata") or {})
        if artifact.get("additionalMetadataFile"):
            metadata.update(json.loads((assembly / artifact["additionalMetadataFile"]).read_text()))
        for path, entries in metadata.items():
            for entry in entries:
                if entry.get("type") == "aws:cdk:acknowledged-rules":
                    for rule, reason in entry["data"].items():
                        found.append(Acknowledgement(path, rule.removeprefix("Annotation::"), reason))
    return found


def unacknowledged(findings: Iterable[Finding], plugin_prefix: str, path_prefix: str = "") -> list[Finding]:
    """Findings of plugins whose name starts with ``plugin_prefix`` under ``path_prefix`` not acknowledged."""
    return [
        f
        for f in findings
        if f.plugin.startswith(plugin_prefix)
        and not f.acknowledged
        and f.construct_path.startswith(path_prefix)
    ]


# ---------------------------------------------------------------- snapshots

_ASSET_HASH = re.compile(r"[0-9a-f]{64}")
_RUNTIME = re.compile(r"^(nodejs|python)\d+(\.\d+)?(\.x)?$")


def normalize_template(template: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``template`` with what churns without a product change removed or masked.

    Asset hashes (64 hex chars) -> ``<asset-hash>``; ``AWS::CDK::Metadata`` and the ``CDKMetadata``
    condition, ``Metadata`` blocks written by CDK (``aws:cdk:*``, ``aws:asset:*``) dropped; the runtime of
    CDK-managed Lambdas (custom resource providers, kubectl handler) -> ``<cdk-managed-runtime>``;
    the ``BootstrapVersion`` parameter and ``CheckBootstrapVersion`` rule dropped; ``PublishOutput*``
    outputs (cross-stack references, which change with the consuming stacks) dropped.
    """
    t = copy.deepcopy(template)
    resources = t.get("Resources", {})
    for logical_id in [k for k, v in resources.items() if v.get("Type") == "AWS::CDK::Metadata"]:
        del resources[logical_id]
    for res in resources.values():
        meta = res.get("Metadata")
        if isinstance(meta, dict):
            for key in [k for k in meta if k.startswith(("aws:cdk:", "aws:asset:"))]:
                del meta[key]
            if not meta:
                del res["Metadata"]
        props = res.get("Properties", {})
        if res.get("Type") == "AWS::Lambda::Function" and _RUNTIME.match(str(props.get("Runtime", ""))):
            props["Runtime"] = "<cdk-managed-runtime>"
    # Cross-stack plumbing: CDK publishes an output per attribute another stack reads (Fn::GetStackOutput);
    # it changes when a *consumer* changes, so the producer's snapshot ignores it.
    outputs = t.get("Outputs", {})
    for name in [k for k in outputs if k.startswith("PublishOutput")]:
        del outputs[name]
    t.get("Conditions", {}).pop("CDKMetadataAvailable", None)
    if not t.get("Conditions"):
        t.pop("Conditions", None)
    t.get("Parameters", {}).pop("BootstrapVersion", None)
    if not t.get("Parameters"):
        t.pop("Parameters", None)
    t.get("Rules", {}).pop("CheckBootstrapVersion", None)
    if not t.get("Rules"):
        t.pop("Rules", None)
    return json.loads(_ASSET_HASH.sub("<asset-hash>", json.dumps(t, sort_keys=True)))
