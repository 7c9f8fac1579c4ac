"""docker-compose.yml and the Dockerfile, checked by parsing (no Docker engine here)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_present():
    services = _compose()["services"]
    assert {"ray-head", "ray-worker", "coordinator", "ray-worker-gpu"} <= set(services)


def test_ports_bind_to_loopback_by_default():
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            host = str(port).split(":")[0]
            # ${EVOLOSS_BIND:-127.0.0.1} defaults to loopback; a literal host must be loopback
            assert host in ("${EVOLOSS_BIND", "127.0.0.1") or host.startswith("127."), (name, port)
            assert "${EVOLOSS_BIND:-127.0.0.1}" in str(port) or str(port).startswith("127."), (name, port)


def test_commands_wire_the_cluster():
    s = _compose()["services"]
    assert re.search(r"ray start --head .*--port=6379", s["ray-head"]["command"])
    assert "--address=ray-head:6379" in s["ray-worker"]["command"]
    assert s["coordinator"]["command"].startswith("evoloss search")
    assert "--address ray-head:6379" in s["coordinator"]["command"]
    assert "ray-head" in s["coordinator"]["depends_on"]


def test_runs_volume_and_gpu_reservation():
    s = _compose()["services"]
    for name in ("ray-head", "ray-worker", "coordinator"):
        assert any(str(v).startswith("./runs:") for v in s[name]["volumes"]), name
    gpu = s["ray-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in s:
        assert s[name]["environment"]["RAY_USAGE_STATS_ENABLED"] == "0"


def test_dockerfile_installs_the_package():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1\d", text, re.M)
    for pkg in ("evoloss", "losses", "workers", "results", "search"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert "pip install --no-cache-dir ." in text
