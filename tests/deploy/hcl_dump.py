"""Parse OpenTofu files with python-hcl2; print {path: document} as JSON, literals unquoted.

Run with the tools venv's python (tests/test_deploy_tofu.py does). python-hcl2 8 keeps a string literal's quotes
and marks blocks with `__is_block__`; this strips both, so `"db.t3.micro"` reads as db.t3.micro and an expression
stays `${...}`. A file that does not parse raises, and the test fails with its name.
usage: hcl_dump.py FILE...
"""

from __future__ import annotations

import json
import sys
from typing import Any

import hcl2


def clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {clean(k): clean(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [clean(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


out = {}
for path in sys.argv[1:]:
    with open(path) as file:
        try:
            out[path] = clean(hcl2.load(file))
        except Exception as exc:
            raise SystemExit(f"{path}: {type(exc).__name__}: {exc}") from exc
print(json.dumps(out))
