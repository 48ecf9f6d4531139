"""deploy/docker-compose: the Compose Specification's schema accepts the file; services, ports, environment,
healthchecks, volumes and provisioning are what deploy/README.md says; promtool accepts prometheus.yml. The Dockerfile
is hadolint-clean and runs as uid 10001 with the components folder writable."""

from __future__ import annotations

import json
import re
import shutil

import jsonschema
import yaml

from tests.conftest import ROOT
from tests.deploy.tools import DEPLOY, run, tool

COMPOSE_DIR = DEPLOY / "docker-compose"
SCHEMA = ROOT / "tests" / "deploy" / "compose-spec.json"


def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    lines = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_compose_specification_schema_accepts_the_file():
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(compose())


def test_a_broken_file_is_refused_by_the_same_schema():
    broken = compose()
    broken["services"]["postgres"]["healthcheck"]["interval"] = ["5s"]
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    assert errors


def test_services_and_ports():
    services = compose()["services"]
    assert set(services) == {"workflow-server", "postgres", "redis", "adminer", "prometheus", "grafana"}
    ports = {name: [p.split(":")[0] for p in svc.get("ports", [])] for name, svc in services.items()}
    assert ports["workflow-server"] == ["8080", "8081"]
    assert ports["adminer"] == ["8888"] and services["adminer"]["ports"] == ["8888:8080"]
    assert ports["prometheus"] == ["9090"] and ports["grafana"] == ["3000"]
    # The guide's "just the dependencies" mode runs the server on the host: postgres and redis must be reachable.
    assert ports["postgres"] == ["5432"] and ports["redis"] == ["6379"]


def test_credentials_environment_and_dependencies():
    services = compose()["services"]
    pg = services["postgres"]["environment"]
    assert pg["POSTGRES_USER"] == pg["POSTGRES_PASSWORD"] == "workflow"
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_USER"] == grafana["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    assert services["adminer"]["environment"]["ADMINER_DEFAULT_SERVER"] == "postgres"
    server = services["workflow-server"]
    env = server["environment"]
    example = env_example()
    for name in ("WORKFLOW_DB_HOST", "WORKFLOW_DB_NAME", "WORKFLOW_DB_USER", "WORKFLOW_DB_PASSWORD",
                 "WORKFLOW_REDIS_ADDR", "JWT_SECRET"):  # fmt: skip
        # Each value comes from .env (interpolation), and .env.example names it.
        assert re.fullmatch(rf"\$\{{{name}:-[^}}]*\}}", env[name]), env[name]
        assert name in example
    # The defaults are the example's values, so the stack works with or without a copied .env.
    for name in ("WORKFLOW_DB_HOST", "WORKFLOW_DB_NAME", "WORKFLOW_DB_USER", "WORKFLOW_DB_PASSWORD",
                 "WORKFLOW_REDIS_ADDR"):  # fmt: skip
        assert env[name] == f"${{{name}:-{example[name]}}}"
    assert env["WORKFLOW_ADMIN_ADDR"] == ":8081"
    assert len(example["JWT_SECRET"]) >= 32
    assert server["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_every_service_has_a_healthcheck():
    for name, service in compose()["services"].items():
        check = service["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and check["interval"] and check["retries"], name
    assert "/readyz" in " ".join(compose()["services"]["workflow-server"]["healthcheck"]["test"])
    assert "pg_isready" in compose()["services"]["postgres"]["healthcheck"]["test"][1]


def test_named_volumes_and_the_hot_reloaded_components_mount():
    doc = compose()
    named = set(doc["volumes"])
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in named, f"{name} uses {source}, which is not a named volume"
        assert not any(v.startswith("/") for v in service.get("volumes", [])), name
    server = doc["services"]["workflow-server"]
    assert "../../components:/app/components" in server["volumes"]
    assert not any(v.endswith(":ro") for v in server["volumes"])
    assert server["environment"]["WORKFLOW_COMPONENTS_POLLING"].startswith("${WORKFLOW_COMPONENTS_POLLING:-true")
    assert {"workflow-data", "postgres-data", "redis-data", "prometheus-data", "grafana-data"} <= named


def test_grafana_provisioning_finds_the_datasource_and_the_dashboards():
    doc = compose()
    mounts = dict(v.split(":")[:2] for v in doc["services"]["grafana"]["volumes"])
    provisioning = COMPOSE_DIR / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    provider = yaml.safe_load((provisioning / "dashboards" / "workflow.yml").read_text())["providers"][0]
    assert mounts["../grafana"] == provider["options"]["path"]
    assert len(list((COMPOSE_DIR / "../grafana").glob("*.json"))) == 3


def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    # Lay the files out as the container sees them: the config, and deploy/prometheus mounted at ./rules.
    mounts = dict(v.split(":")[:2] for v in compose()["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["../prometheus"] == "/etc/prometheus/rules"
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "rules")
    out = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS" in out.stdout + out.stderr
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["workflow-server"]["static_configs"] == [{"targets": ["workflow-server:8080"]}]


def test_hadolint_finds_nothing_in_the_dockerfile():
    out = run(tool("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile"))
    assert out.stdout.strip() == ""


def test_the_image_runs_as_uid_10001_with_a_writable_components_folder():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert "USER 10001:10001" in final
    assert any(re.search(r"useradd .*--uid 10001", line) for line in final)
    assert "COPY --chown=10001:10001 components ./components" in final
    assert "ENV WORKFLOW_ADDR=:8080 \\" in final and "WORKFLOW_ADMIN_ADDR=:8081 \\" in final
    assert "WORKFLOW_COMPONENTS_DIR=/app/components \\" in final
    user_at = final.index("USER 10001:10001")
    assert not any(line.startswith(("RUN ", "COPY ")) for line in final[user_at:]), "nothing runs as root after USER"
