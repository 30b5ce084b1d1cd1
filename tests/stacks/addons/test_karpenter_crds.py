"""Who installs and upgrades Karpenter's CRDs: the karpenter-crd release, and only it.

aws-eks-v2's kubectl handler reads a HelmChart's ``SkipCrds`` and never passes ``--skip-crds`` to Helm, so
the controller chart's own ``crds/`` folder is always offered to Helm. That is harmless only because Helm
creates a ``crds/`` folder on install alone, skipping CRDs that exist, and karpenter-crd (which templates
the same CRDs) is installed first. These tests pin each part of that argument.
"""

from __future__ import annotations

import ast
import re
import tarfile
import warnings
from pathlib import Path

from config.addons import KARPENTER_VERSION
from tests.helpers.crd_schema import REPO

CHARTS = REPO.parent / "shared" / "charts"
HANDLER = "package/custom-resource-handlers/dist/aws-eks-v2/kubectl-handler/helm/__init__.py"


def _handler_source() -> str:
    import aws_cdk._jsii as jsii_assembly

    (tarball,) = Path(jsii_assembly.__file__).parent.glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(HANDLER)
        assert member is not None, HANDLER
        return member.read().decode()


def _names(value: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}


def test_the_kubectl_handler_reads_skip_crds_and_never_passes_it_to_helm() -> None:
    with warnings.catch_warnings():  # upstream's regex literals are not raw strings
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(_handler_source())
    assigned = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and "SkipCrds" in ast.unparse(node.value)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    assert assigned == {"skip_crds"}
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "helm"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == "upgrade"
    ]
    assert len(calls) == 1
    passed = set().union(*(_names(a) for a in calls[0].args), *(_names(k.value) for k in calls[0].keywords))
    # If this fails, aws-cdk-lib now honours SkipCrds: stacks/addons/karpenter.py's comment is out of date.
    assert "skip_crds" not in passed and "skip_crds" not in {k.arg for k in calls[0].keywords}


#: The top-level ``metadata.name`` of a CRD file (the chart's templates are Go templates, not YAML yet).
_CRD_NAME = re.compile(r"^kind: CustomResourceDefinition\nmetadata:\n(?:  .*\n)*?  name: (\S+)$", re.M)


def _crd_names(folder: Path) -> set[str]:
    files = sorted(folder.glob("*.yaml"))
    names = {m for path in files for m in _CRD_NAME.findall(path.read_text())}
    assert len(names) == len(files), folder  # one CRD per file in both charts
    return names


def test_karpenter_crd_templates_every_crd_the_controller_chart_carries() -> None:
    # A CRD only in the controller's crds/ folder would be created once by Helm and never upgraded.
    controller = _crd_names(CHARTS / f"karpenter-{KARPENTER_VERSION}" / "crds")
    owned = _crd_names(CHARTS / f"karpenter-crd-{KARPENTER_VERSION}" / "templates")
    assert controller == owned
    assert {"nodepools.karpenter.sh", "nodeclaims.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"} <= owned
