"""The monitoring files under ops/ and the compose `monitoring` profile are valid and consistent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO

OPS = REPO / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "audience-gateway.json"
PROMETHEUS_CONFIG = OPS / "prometheus" / "prometheus.yml"
METRIC_NAME = re.compile(r"\baudience_gateway_[a-z0-9_]+")
SAMPLE_SUFFIXES = re.compile(r"_(bucket|count|sum|total|created)$")


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert panels
    return [target["expr"] for panel in panels for target in panel["targets"]]


async def test_every_dashboard_query_names_an_exported_metric(client):
    response = await client.get("/metrics")
    families = {family.name for family in text_string_to_metric_families(await response.text())}
    for expr in dashboard_expressions():
        names = METRIC_NAME.findall(expr)
        assert names, expr
        for name in names:
            assert name in families or SAMPLE_SUFFIXES.sub("", name) in families, f"{name} in {expr!r}"


def test_prometheus_config_checks():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: the config was only parsed, not checked by Prometheus")
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_monitoring_profile_mounts_existing_files():
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    monitoring = {name: service for name, service in services.items() if "monitoring" in service.get("profiles", [])}
    assert set(monitoring) == {"prometheus", "grafana"}
    assert "profiles" not in services["gateway"] and "profiles" not in services["postgres"]
    for service in monitoring.values():
        for volume in service["volumes"]:
            source = volume.split(":", 1)[0]
            assert (REPO / source).exists(), volume
    provisioning = OPS / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {panel["datasource"]["uid"] for panel in panels} == {datasource["uid"]}
    provider = yaml.safe_load((provisioning / "dashboards" / "audience-gateway.yaml").read_text())["providers"][0]
    assert any(volume.endswith(provider["options"]["path"] + ":ro") for volume in monitoring["grafana"]["volumes"])
