"""deploy/tofu: `terraform fmt -check` (the same as `tofu fmt -check`), every file parsed with python-hcl2, every
module input an environment passes declared and every output it reads produced, the deployment guide's environment
table per environment, and the edge, network, data and alarm rules asserted on the parsed files.

`tofu init/validate/plan` cannot run here: the provider registry is unreachable."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_unavailable
from tests.deploy.tools import DEPLOY, TOOLS_VENV, run, tool

TOFU = DEPLOY / "tofu"
MODULES = ("alb", "ecr", "ecs", "elasticache", "monitoring", "rds", "vpc")
ENVIRONMENTS = ("dev", "staging", "production")
# The guide's "Environment differences" table, as the environments' literal module arguments.
TABLE = {
    # ECS cpu, memory, desired, autoscales; RDS class, Multi-AZ; Redis nodes, type, failover; log days; protection
    "dev": (256, 512, 1, False, "db.t3.micro", False, 1, "cache.t3.micro", False, 30, False),
    "staging": (512, 1024, 2, False, "db.t3.small", True, 1, "cache.t3.small", False, 30, True),
    "production": (2048, 4096, 3, True, "db.r7g.large", True, 2, "cache.r7g.large", True, 90, True),
}
META_ARGUMENTS = {"source", "version", "providers", "count", "for_each", "depends_on"}


@pytest.fixture(scope="module")
def parsed() -> dict[Path, dict[str, Any]]:
    python = TOOLS_VENV / "bin" / "python"
    if not python.exists():
        service_unavailable(f"python-hcl2 is not installed (bash .ci/run installs it into {TOOLS_VENV})")
    files = sorted(TOFU.rglob("*.tf")) + sorted(TOFU.rglob("terraform.tfvars.example"))
    out = run(str(python), str(Path(__file__).parent / "deploy" / "hcl_dump.py"), *map(str, files)).stdout
    return {Path(path): doc for path, doc in json.loads(out).items()}


def blocks(parsed: dict[Path, dict], folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Every `kind "NAME" {...}` block of a folder's .tf files, by name."""
    found: dict[str, dict[str, Any]] = {}
    for path, doc in parsed.items():
        if path.parent == folder and path.suffix == ".tf":
            for entry in doc.get(kind, []):
                found.update(entry)
    return found


def resources(parsed: dict[Path, dict], module: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path, doc in parsed.items():
        if path.parent == TOFU / "modules" / module and path.suffix == ".tf":
            for entry in doc.get("resource", []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        out[rtype, name] = body
    return out


def test_the_tree_of_the_guide():
    assert sorted(p.name for p in (TOFU / "modules").iterdir()) == sorted(MODULES)
    assert sorted(p.name for p in (TOFU / "environments").iterdir()) == sorted(ENVIRONMENTS)
    for module in MODULES:
        assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= {
            p.name for p in (TOFU / "modules" / module).iterdir()
        }
    for env in ENVIRONMENTS:
        assert (TOFU / "environments" / env / "terraform.tfvars.example").exists()


def test_fmt_check():
    terraform = tool("tofu") if shutil.which("tofu") else tool("terraform")
    out = run(terraform, "fmt", "-check", "-recursive", "-diff", str(TOFU), check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_file_parses(parsed):
    assert len(parsed) == len(list(TOFU.rglob("*.tf"))) + len(ENVIRONMENTS)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_module_inputs_and_outputs_line_up(parsed, env):
    folder = TOFU / "environments" / env
    env_vars = blocks(parsed, folder, "variable")
    text = " ".join((folder / name).read_text() for name in ("main.tf", "outputs.tf", "versions.tf"))
    for used in set(re.findall(r"\bvar\.([a-z0-9_]+)", text)):
        assert used in env_vars, f"{env} uses var.{used}, which it does not declare"
    calls = blocks(parsed, folder, "module")
    assert set(calls) == set(MODULES)
    for name, call in calls.items():
        module_dir = (folder / call["source"]).resolve()
        declared = blocks(parsed, module_dir, "variable")
        passed = set(call) - META_ARGUMENTS
        assert passed <= set(declared), f"{env}: module {name} does not declare {passed - set(declared)}"
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= passed, f"{env}: module {name} needs {required - passed}"
    for module, output in set(re.findall(r"\bmodule\.([a-z0-9_]+)\.([a-z0-9_]+)", text)):
        produced = blocks(parsed, (folder / calls[module]["source"]).resolve(), "output")
        assert output in produced, f"{env} reads module.{module}.{output}, which the module does not output"
    # The example vars file sets declared variables only, and every variable without a default.
    example = parsed[folder / "terraform.tfvars.example"]
    assert set(example) <= set(env_vars)
    assert {v for v, body in env_vars.items() if "default" not in body} <= set(example)
    assert "default" not in env_vars["image_tag"]  # so `tofu apply -var="image_tag=v0.5.1"` picks the release


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_environment_table(parsed, env):
    cpu, memory, desired, autoscales, rds_class, multi_az, nodes, node_type, failover, retention, protect = TABLE[env]
    calls = blocks(parsed, TOFU / "environments" / env, "module")
    ecs, rds, redis = calls["ecs"], calls["rds"], calls["elasticache"]
    assert (ecs["cpu"], ecs["memory"], ecs["desired_count"], ecs["autoscaling_enabled"]) == (
        cpu,
        memory,
        desired,
        autoscales,
    )
    assert (rds["instance_class"], rds["multi_az"], rds["deletion_protection"]) == (rds_class, multi_az, protect)
    assert (redis["num_cache_nodes"], redis["node_type"], redis["automatic_failover"]) == (nodes, node_type, failover)
    assert calls["monitoring"]["log_retention_days"] == retention
    assert calls["alb"]["deletion_protection"] == protect
    if autoscales:
        assert ecs["max_capacity"] > ecs["min_capacity"] == desired


def test_production_keeps_its_state_in_s3_and_the_others_locally(parsed):
    for env in ENVIRONMENTS:
        terraform = parsed[TOFU / "environments" / env / "versions.tf"]["terraform"][0]
        if env == "production":
            (backend,) = terraform["backend"]
            assert backend["s3"]["bucket"] == "workflow-tofu-state"
            assert backend["s3"]["dynamodb_table"] == "workflow-tofu-locks"
            assert backend["s3"]["encrypt"] is True
        else:
            assert "backend" not in terraform


def test_the_edge(parsed):
    alb = resources(parsed, "alb")
    https, http = alb["aws_lb_listener", "https"], alb["aws_lb_listener", "http"]
    assert (https["port"], https["protocol"], https["certificate_arn"]) == (443, "HTTPS", "${var.certificate_arn}")
    redirect = http["default_action"][0]["redirect"][0]
    assert (http["port"], redirect["protocol"], redirect["port"]) == (80, "HTTPS", "443")
    group = alb["aws_lb_target_group", "app"]
    assert group["port"] == "${var.target_port}" and group["health_check"][0]["path"] == "/readyz"
    assert group["deregistration_delay"] == "${var.deregistration_delay_seconds}"
    assert alb["aws_lb", "this"]["internal"] is False
    assert "8081" not in (TOFU / "modules" / "alb" / "main.tf").read_text().replace("(8081)", "")
    for env in ENVIRONMENTS:
        call = blocks(parsed, TOFU / "environments" / env, "module")["alb"]
        assert call["deregistration_delay_seconds"] == "${var.shutdown_timeout_seconds}"
        assert blocks(parsed, TOFU / "environments" / env, "module")["ecs"]["shutdown_timeout_seconds"] == (
            "${var.shutdown_timeout_seconds}"
        )
    vpc = resources(parsed, "vpc")
    assert ("aws_nat_gateway", "this") in vpc and ("aws_subnet", "public") in vpc and ("aws_subnet", "private") in vpc


def test_compute_is_private_and_secrets_come_from_the_secret_stores(parsed):
    ecs = resources(parsed, "ecs")
    service = ecs["aws_ecs_service", "this"]
    network = service["network_configuration"][0]
    assert network["assign_public_ip"] is False and network["subnets"] == "${var.private_subnet_ids}"
    assert service["launch_type"] == "FARGATE" and service["enable_execute_command"] is True
    ingress = [body for (kind, _), body in ecs.items() if kind == "aws_vpc_security_group_ingress_rule"]
    assert [(r["from_port"], r["referenced_security_group_id"]) for r in ingress] == [
        (8080, "${var.alb_security_group_id}")
    ]
    for env in ENVIRONMENTS:
        call = blocks(parsed, TOFU / "environments" / env, "module")["ecs"]
        assert set(call["secrets"]) == {"WORKFLOW_DB_PASSWORD", "JWT_SECRET"}
        assert "PASSWORD" not in " ".join(call["environment"]) and "JWT" not in " ".join(call["environment"])
        assert set(call["environment"]) == {"WORKFLOW_DB_HOST", "WORKFLOW_DB_NAME", "WORKFLOW_DB_USER",
                                            "WORKFLOW_REDIS_ADDR"}  # fmt: skip


@pytest.mark.parametrize(("module", "port"), [("rds", 5432), ("elasticache", 6379)])
def test_only_the_tasks_reach_the_data_stores(parsed, module, port):
    rules = [body for (kind, _), body in resources(parsed, module).items() if "ingress_rule" in kind]
    assert len(rules) == 1
    (rule,) = rules
    assert (rule["from_port"], rule["to_port"]) == (port, port)
    assert rule["referenced_security_group_id"] == "${each.value}" and "cidr_ipv4" not in rule
    for env in ENVIRONMENTS:
        call = blocks(parsed, TOFU / "environments" / env, "module")[module]
        assert call["allowed_security_group_ids"] == ["${module.ecs.task_security_group_id}"]


def test_the_alarms_and_where_they_go(parsed):
    mon = resources(parsed, "monitoring")
    variables = blocks(parsed, TOFU / "modules" / "monitoring", "variable")
    assert variables["cpu_threshold_percent"]["default"] == 80
    assert variables["memory_threshold_percent"]["default"] == 85
    assert variables["alb_5xx_threshold"]["default"] == 10
    assert mon["aws_cloudwatch_metric_alarm", "ecs_cpu"]["metric_name"] == "CPUUtilization"
    assert mon["aws_cloudwatch_metric_alarm", "ecs_memory"]["metric_name"] == "MemoryUtilization"
    five = mon["aws_cloudwatch_metric_alarm", "alb_5xx"]
    queries = {q["id"]: q for q in five["metric_query"]}
    assert {q["metric"][0]["metric_name"] for q in queries.values() if "metric" in q} == {
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
    }
    assert all(
        q["metric"][0]["period"] == 60 and q["metric"][0]["stat"] == "Sum" for q in queries.values() if "metric" in q
    )
    unhealthy = mon["aws_cloudwatch_metric_alarm", "unhealthy_hosts"]
    assert unhealthy["metric_name"] == "UnHealthyHostCount" and unhealthy["threshold"] == 0
    for (kind, name), body in mon.items():
        if kind == "aws_cloudwatch_metric_alarm":
            assert body["alarm_actions"] == ["${aws_sns_topic.alarms.arn}"], name
    assert mon["aws_sns_topic_subscription", "email"]["protocol"] == "email"
    assert mon["aws_cloudwatch_log_group", "app"]["retention_in_days"] == "${var.log_retention_days}"


def test_redis_failover_and_rds_protection_follow_their_inputs(parsed):
    group = resources(parsed, "elasticache")["aws_elasticache_replication_group", "this"]
    assert group["automatic_failover_enabled"] == "${var.automatic_failover}"
    assert group["num_cache_clusters"] == "${var.num_cache_nodes}"
    assert group["transit_encryption_enabled"] is True
    db = resources(parsed, "rds")["aws_db_instance", "this"]
    assert db["multi_az"] == "${var.multi_az}" and db["deletion_protection"] == "${var.deletion_protection}"
    assert db["publicly_accessible"] is False and db["manage_master_user_password"] is True
