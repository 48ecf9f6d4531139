"""checkov on deploy/tofu and deploy/helm: no failed check beyond the documented skip list (deploy/checkov.yaml)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deploy.tools import DEPLOY, run, tool

CONFIG = DEPLOY / "checkov.yaml"


def checkov(*args: str, path_extra: str = "") -> list[dict]:
    # Offline: no policy metadata download, no guideline look-up (this machine reaches package registries only).
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "PATH": f"{path_extra}:{os.environ['PATH']}"}
    out = run(tool("checkov"), "--config-file", str(CONFIG), *args, "-o", "json", cwd=ROOT, check=False, env=env)
    reports = json.loads(out.stdout)
    return reports if isinstance(reports, list) else [reports]


def failures(reports: list[dict]) -> list[str]:
    return [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]


def test_tofu():
    reports = checkov("-d", "deploy/tofu", "--framework", "terraform")
    assert reports[0]["summary"]["passed"] > 100 and reports[0]["summary"]["parsing_errors"] == 0
    assert failures(reports) == []


def test_helm_chart_with_its_defaults():
    helm = Path(tool("helm")).parent
    reports = checkov("-d", "deploy/helm", "--framework", "helm", path_extra=str(helm))
    assert reports[0]["summary"]["resource_count"] >= 5
    assert failures(reports) == []


def test_helm_chart_with_the_production_values(tmp_path):
    helm = tool("helm")
    values = DEPLOY / "helm" / "workflow" / "ci" / "production-values.yaml"
    rendered = run(helm, "template", "workflow", str(DEPLOY / "helm" / "workflow"), "-f", str(values)).stdout
    (tmp_path / "production.yaml").write_text(rendered)
    reports = checkov("-d", str(tmp_path), "--framework", "kubernetes")
    assert reports[0]["summary"]["resource_count"] >= 9
    assert failures(reports) == []


@pytest.mark.parametrize("check", re.findall(r"^  - (CKV\w+)", CONFIG.read_text(), flags=re.M))
def test_every_skipped_check_is_explained_in_the_readme(check):
    assert check in (DEPLOY / "README.md").read_text()
