"""The few read-only answers of a Kubernetes API server that `helm upgrade --dry-run=client` needs.

No cluster runs here, yet `helm upgrade` reads the release it upgrades from the cluster even in a client-side dry
run. This server answers the version and discovery calls and lists one stored release (Helm's Secret storage
format), so the deployment guide's upgrade command runs as written. It writes nothing: Helm never writes in a
dry run, and any other call gets 404.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def release_secret(release: dict[str, Any]) -> dict[str, Any]:
    """A Secret as Helm's secret driver stores a release: gzip + base64 of its JSON, base64 again by the API."""
    release = {**release, "info": {**release["info"], "status": "deployed", "description": "Install complete"}}
    encoded = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    name, version = release["name"], release["version"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {
            "name": f"sh.helm.release.v1.{name}.v{version}",
            "namespace": release["namespace"],
            "labels": {"name": name, "owner": "helm", "status": "deployed", "version": str(version)},
        },
        "data": {"release": base64.b64encode(encoded).decode()},
    }


# Discovery: the kinds the chart renders, so Helm can map each manifest to its resource.
RESOURCES = {
    "v1": [("serviceaccounts", "ServiceAccount"), ("configmaps", "ConfigMap"), ("services", "Service"),
           ("secrets", "Secret")],
    "apps/v1": [("deployments", "Deployment")],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
    "networking.k8s.io/v1": [("ingresses", "Ingress")],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor")],
}  # fmt: skip


def discovery() -> dict[str, Any]:
    def resource_list(group_version: str) -> dict[str, Any]:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [
                {"name": plural, "singularName": "", "namespaced": True, "kind": kind,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for plural, kind in RESOURCES[group_version]
            ],
        }  # fmt: skip

    groups = [
        {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
         "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
        for gv in RESOURCES if "/" in gv
    ]  # fmt: skip
    answers: dict[str, Any] = {
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups},
        "/api/v1": resource_list("v1"),
    }
    answers |= {f"/apis/{gv}": resource_list(gv) for gv in RESOURCES if "/" in gv}
    return answers


@contextmanager
def fake_kube(tmp: Path, releases: list[dict[str, Any]]) -> Iterator[tuple[Path, list[str]]]:
    """Serve on a free loopback port; yield a kubeconfig for it and the list of paths Helm asked for."""
    secrets = {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": [release_secret(r) for r in releases]}
    answers = {
        "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"},
        **discovery(),
    }
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            asked.append(self.path)
            body = answers.get(path) or (secrets if path.endswith("/secrets") else None)
            data = json.dumps(body or {"kind": "Status", "code": 404}).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "users": [{"name": "fake", "user": {}}],
                "current-context": "fake",
            }
        )
    )
    try:
        yield kubeconfig, asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
