"""deploy/helm/workflow: `helm lint --strict`, `helm template` and the deployment guide's install and upgrade
commands (client-side dry runs), every rendered manifest validated by kubernetes-validate (the ServiceMonitor by the
Prometheus Operator's CRD schema), and the chart's rules asserted on the rendered objects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.fake_kube import fake_kube
from tests.deploy.tools import DEPLOY, TOOLS_VENV, run, tool

CHART = "./deploy/helm/workflow"
PRODUCTION = DEPLOY / "helm" / "workflow" / "ci" / "production-values.yaml"
# The guide's install command, word for word.
GUIDE_SET = [
    "--set", "image.tag=v0.5.0",
    "--set", "ingress.enabled=true",
    "--set", "ingress.hosts[0].host=workflow.example.com",
    "--set", "autoscaling.enabled=true",
]  # fmt: skip
KUBERNETES = "1.30.0"


@pytest.fixture(scope="module")
def helm() -> str:
    return tool("helm")


def helm_run(helm: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, f"helm {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def render(helm: str, *args: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = helm_run(helm, "template", "workflow", CHART, *args).stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def container(objects: dict) -> dict[str, Any]:
    return objects["Deployment", "workflow"]["spec"]["template"]["spec"]["containers"][0]


def app_version() -> str:
    return yaml.safe_load((DEPLOY / "helm" / "workflow" / "Chart.yaml").read_text())["appVersion"]


def test_the_chart_version_follows_the_package():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{app_version()}"' in pyproject


@pytest.mark.parametrize("args", [[], ["-f", str(PRODUCTION)], GUIDE_SET], ids=["defaults", "production", "guide-set"])
def test_helm_lint_strict(helm, args):
    out = helm_run(helm, "lint", "--strict", CHART, *args).stdout
    assert "0 chart(s) failed" in out


def test_every_value_of_the_guides_table_has_its_default():
    values = yaml.safe_load((DEPLOY / "helm" / "workflow" / "values.yaml").read_text())
    table = {
        "image.tag": "",  # empty means the chart's appVersion
        "replicaCount": 1,
        "autoscaling.enabled": False,
        "autoscaling.minReplicas": 1,
        "autoscaling.maxReplicas": 10,
        "podDisruptionBudget.enabled": False,
        "podDisruptionBudget.minAvailable": 1,
        "ingress.enabled": False,
        "ingress.className": "",
        "monitoring.serviceMonitor.enabled": False,
        "envFromSecret": "",
    }
    for key, default in table.items():
        node: Any = values
        for part in key.split("."):
            node = node[part]
        assert node == default, key
    assert values["autoscaling"]["targetCPUUtilizationPercentage"] == 80
    assert values["autoscaling"]["targetMemoryUtilizationPercentage"] is None


def test_defaults(helm):
    objects = render(helm)
    assert set(objects) == {
        ("ServiceAccount", "workflow"),
        ("ConfigMap", "workflow-config"),
        ("Service", "workflow"),
        ("Service", "workflow-admin"),
        ("Deployment", "workflow"),
    }
    deployment = objects["Deployment", "workflow"]
    pod = deployment["spec"]["template"]["spec"]
    main = container(objects)
    assert deployment["spec"]["replicas"] == 1
    assert main["image"] == f"workflow-server:{app_version()}"
    assert main["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Non-root, read-only root filesystem; everything the server writes is on a volume.
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/app/components", "/app/data", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]["name"]], path
    assert mounts["/etc/workflow"]["readOnly"] and main["args"] == ["-config", "/etc/workflow/config.yaml"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["WORKFLOW_ADMIN_ADDR"] == ":8081" and env["WORKFLOW_COMPONENTS_DIR"] == "/app/components"
    # Requests, so an HPA can compute utilisation.
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    # SIGTERM comes after the preStop sleep; the grace period covers both plus the whole shutdown timeout.
    sleep = int(main["lifecycle"]["preStop"]["exec"]["command"][1])
    assert env["WORKFLOW_SHUTDOWN_TIMEOUT"] == "30s"
    assert pod["terminationGracePeriodSeconds"] >= 30 + sleep and sleep > 0
    # The public Service exposes 8080 only; the admin listener has its own.
    assert [p["port"] for p in objects["Service", "workflow"]["spec"]["ports"]] == [8080]
    assert [p["port"] for p in objects["Service", "workflow-admin"]["spec"]["ports"]] == [8081]
    assert "annotations" not in objects["Service", "workflow"]["metadata"]
    assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"]["annotations"]


def test_a_config_change_rolls_the_pods(helm):
    def checksum(*args: str) -> str:
        return render(helm, *args)["Deployment", "workflow"]["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "config=name: other")


def test_the_guides_production_values(helm):
    objects = render(helm, "-f", str(PRODUCTION))
    hpa = objects["HorizontalPodAutoscaler", "workflow"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "replicas" not in objects["Deployment", "workflow"]["spec"]
    assert objects["PodDisruptionBudget", "workflow"]["spec"]["minAvailable"] == 1
    monitor = objects["ServiceMonitor", "workflow"]
    assert monitor["metadata"]["labels"]["prometheus"] == "kube-prometheus"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    ingress = objects["Ingress", "workflow"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert ingress["metadata"]["annotations"] == {
        "alb.ingress.kubernetes.io/scheme": "internet-facing",
        "alb.ingress.kubernetes.io/target-type": "ip",
    }
    assert ingress["spec"]["tls"] == [{"secretName": "workflow-tls", "hosts": ["workflow.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "workflow", "port": {"number": 8080}}
    main = container(objects)
    assert main["envFrom"] == [{"secretRef": {"name": "workflow-secrets"}}]
    assert main["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2000m", "memory": "2Gi"},
    }
    annotations = objects["Deployment", "workflow"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8080"
    assert objects["Service", "workflow"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert "annotations" not in objects["Service", "workflow-admin"]["metadata"]


def test_memory_scaling_only_when_its_target_is_set(helm):
    objects = render(
        helm, "--set", "autoscaling.enabled=true", "--set", "autoscaling.targetMemoryUtilizationPercentage=75"
    )
    metrics = objects["HorizontalPodAutoscaler", "workflow"]["spec"]["metrics"]
    assert [(m["resource"]["name"], m["resource"]["target"]["averageUtilization"]) for m in metrics] == [
        ("cpu", 80),
        ("memory", 75),
    ]


def test_the_service_monitor_needs_monitoring_enabled(helm):
    objects = render(helm, "--set", "monitoring.serviceMonitor.enabled=true")
    assert not any(kind == "ServiceMonitor" for kind, _ in objects)


def test_components_seeded_by_an_init_container(helm):
    objects = render(
        helm, "--set", "components.seed.enabled=true", "--set-string", "components.seed.files.hello\\.py=X = 1"
    )
    assert objects["ConfigMap", "workflow-components"]["data"] == {"hello.py": "X = 1\n"}
    pod = objects["Deployment", "workflow"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/seed", "/app/components"}
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["seed"]["configMap"]["name"] == "workflow-components" and "emptyDir" in volumes["components"]


def test_the_guides_install_command_dry_run(helm):
    proc = helm_run(helm, "install", "workflow", CHART, "--namespace", "workflow", "--create-namespace",
                    *GUIDE_SET, "--dry-run=client")  # fmt: skip
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for d in yaml.safe_load_all(proc.stdout.split("MANIFEST:")[1].split("NOTES:")[0])
        if d
    }
    assert container(docs)["image"] == "workflow-server:v0.5.0"
    assert docs["Ingress", "workflow"]["spec"]["rules"][0]["host"] == "workflow.example.com"
    assert ("HorizontalPodAutoscaler", "workflow") in docs
    notes = proc.stdout.split("NOTES:")[1]
    assert "WARNING: autoscaling is enabled, but neither database.* nor envFromSecret is set" in notes
    assert "port-forward svc/workflow-admin 8081:8081" in notes


def test_notes_say_the_class_annotation_was_dropped_and_stay_quiet_on_replicas_with_a_secret(helm):
    proc = helm_run(helm, "install", "workflow", CHART, "-f", str(PRODUCTION), "--dry-run=client")
    notes = proc.stdout.split("NOTES:")[1]
    assert "dropped the annotation" in notes and "ingressClassName: alb" in notes
    assert "WARNING" not in notes
    replicas = helm_run(helm, "install", "workflow", CHART, "--set", "replicaCount=3", "--dry-run=client").stdout
    assert "WARNING: replicaCount is 3" in replicas.split("NOTES:")[1]
    with_db = helm_run(helm, "install", "workflow", CHART, "--set", "replicaCount=3", "--set",
                       "database.host=pg:5432", "--dry-run=client").stdout  # fmt: skip
    assert "WARNING" not in with_db.split("NOTES:")[1]


def test_the_guides_upgrade_commands_dry_run(helm, tmp_path):
    """`helm upgrade` reads the release from the cluster even in a client-side dry run: a fake API server answers
    discovery and holds one installed release. OpenAPI validation is off because that fake has no schemas;
    kubernetes-validate checks the manifests instead (test below)."""
    installed = json.loads(helm_run(helm, "install", "workflow", CHART, "--dry-run=client", "-o", "json").stdout)
    with fake_kube(tmp_path, [installed]) as (kubeconfig, asked):
        common = ["--dry-run=client", "--disable-openapi-validation", "--kubeconfig", str(kubeconfig)]
        proc = helm_run(helm, "upgrade", "workflow", CHART, "--set", "image.tag=v0.5.1", *common)
        assert "REVISION: 2" in proc.stdout and "workflow-server:v0.5.1" in proc.stdout
        assert any("/secrets" in path for path in asked)
    with fake_kube(tmp_path, []) as (kubeconfig, _):
        common = ["--dry-run=client", "--disable-openapi-validation", "--kubeconfig", str(kubeconfig)]
        proc = helm_run(helm, "upgrade", "--install", "workflow", CHART, "-f", str(PRODUCTION), *common)
        assert "REVISION: 1" in proc.stdout and "kind: ServiceMonitor" in proc.stdout


RENDERS = {
    "defaults": [],
    "production": ["-f", str(PRODUCTION)],
    "guide-set": GUIDE_SET,
    "seeded-memory-db": [
        "--set", "components.seed.enabled=true", "--set-string", "components.seed.files.a\\.py=A = 1",
        "--set", "autoscaling.enabled=true", "--set", "autoscaling.targetMemoryUtilizationPercentage=75",
        "--set", "database.host=pg:5432", "--set", "database.passwordSecret.name=pg", "--set", "redis.addr=redis:6379",
        "--set", "monitoring.enabled=true", "--set", "monitoring.serviceMonitor.enabled=true",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", RENDERS)
def test_kubernetes_validate_accepts_every_rendered_manifest(helm, tmp_path, name):
    python = TOOLS_VENV / "bin" / "python"
    if not (TOOLS_VENV / "bin" / "kubernetes-validate").exists():
        tool("kubernetes-validate")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(helm_run(helm, "template", "workflow", CHART, *RENDERS[name]).stdout)
    checker = ROOT / "tests" / "deploy" / "k8s_validate.py"
    problems = json.loads(run(str(python), str(checker), KUBERNETES, str(manifest)).stdout)
    assert problems == []
    if name == "production":
        # The validator itself refuses what a real API server would: an unknown field, on a built-in kind and
        # on the ServiceMonitor.
        broken = manifest.read_text().replace("terminationGracePeriodSeconds", "terminationGracePeriod")
        broken = broken.replace("scrapeTimeout:", "scrapeTimeoutt:")
        bad = Path(tmp_path / "broken.yaml")
        bad.write_text(broken)
        problems = json.loads(run(str(python), str(checker), KUBERNETES, str(bad)).stdout)
        assert len(problems) == 2, problems
