"""Validate rendered Kubernetes manifests; print one JSON list of problems (empty when all are valid).

Run with the tools venv's python (tests/test_deploy_helm.py does). Built-in kinds go through kubernetes-validate's
strict schemas for one Kubernetes version; a ServiceMonitor goes through the openAPIV3Schema of the Prometheus
Operator's CRD vendored beside this file, with unknown properties refused as the API server would.
usage: k8s_validate.py KUBERNETES_VERSION FILE...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent


def strict(schema: Any) -> Any:
    """The CRD schema with additionalProperties: false wherever properties are listed (structural pruning)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


crd = yaml.safe_load((HERE / "servicemonitor-crd.yaml").read_text())
version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
schema = strict(version["schema"]["openAPIV3Schema"])
schema["properties"]["metadata"] = {"type": "object"}

problems: list[str] = []
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if not doc:
            continue
        where = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "ServiceMonitor":
            problems += [f"{where}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, sys.argv[1], strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where}: {exc.message}")
        except Exception as exc:
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
print(json.dumps(problems))
