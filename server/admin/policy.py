"""The optional import allow-list for uploaded component sources, checked on the syntax tree."""

from __future__ import annotations

import ast

from ..errors import ComponentError


def check_imports(source: str, path: str, allowed: frozenset[str]) -> None:
    """Refuse `source` if it imports a top-level module outside `allowed` (or calls __import__).

    This is a guard rail against mistakes, not a sandbox: in-process Python can reach anything.
    """
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise ComponentError(f"syntax error: {exc.msg}", file=path, line=exc.lineno) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            raise ComponentError("__import__() is not allowed by the import policy", file=path, line=node.lineno)
        else:
            continue
        for name in names:
            top = name.split(".", 1)[0]
            if top not in allowed:
                raise ComponentError(
                    f"import of {name!r} is not allowed by the import policy (allowed: {', '.join(sorted(allowed))})",
                    file=path,
                    line=node.lineno,
                )
