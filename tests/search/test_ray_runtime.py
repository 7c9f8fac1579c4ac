"""`start_ray`: loopback-only embedded Ray, temp-dir rules, and a real 2-node cluster on 127.0.0.2/.3."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray
import psutil  # after ray: it ships in ray/thirdparty_files

from evoloss.search.dispatch import ActorPool, PoolConfig
from evoloss.search.ray_runtime import (
    MAX_TEMP_DIR_LEN,
    check_address,
    embedded_ray_pids,
    is_loopback,
    listening_sockets,
    processes_under,
    ray_environment,
    ray_temp_dir,
    start_ray,
    stop_processes_under,
    wait_until_gone,
)
from tests.search import dispatch_test_trainers as tt

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY_CLI = str(Path(sys.executable).parent / "ray")


# --- unit ---------------------------------------------------------------------------------------
def test_temp_dir_budget_leaves_room_for_the_widest_socket_path() -> None:
    widest = "/session_2026-12-31_23-59-59_999999_4194304/sockets/plasma_store.99"  # 7-digit pid, retry index
    assert MAX_TEMP_DIR_LEN + len(widest) <= 108  # AF_UNIX sun_path: 108 bytes incl. the NUL
    assert MAX_TEMP_DIR_LEN >= len("/tmp/evoloss-ray-xxxxxxxx")


def test_short_temp_dir_is_used_in_place() -> None:
    base = Path(tempfile.mkdtemp(prefix="evl-", dir="/tmp"))
    try:
        got, fallback = ray_temp_dir(base / "run" / "ray")
        assert got == base / "run" / "ray" and got.is_dir() and not fallback
    finally:
        shutil.rmtree(base)


def test_long_or_missing_temp_dir_falls_back_to_a_short_one(tmp_path: Path) -> None:
    for preferred in (tmp_path / ("r" * 80) / "ray", None):
        got, fallback = ray_temp_dir(preferred)
        try:
            assert fallback and got.is_dir() and got.name.startswith("evoloss-ray-")
            assert len(str(got)) <= MAX_TEMP_DIR_LEN
        finally:
            shutil.rmtree(got)
    assert not (tmp_path / ("r" * 80)).exists()


@pytest.mark.parametrize("bad", ["127.0.0.2", ":6379", "host:abc", "host:0", "host:70000", ""])
def test_check_address_rejects_bad_addresses(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        check_address(bad)


def test_check_address_accepts_host_port() -> None:
    assert check_address("127.0.0.2:06379") == "127.0.0.2:6379"


@pytest.mark.parametrize(
    "ip, expected",
    [("127.0.0.1", True), ("127.0.0.3", True), ("::1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False),
     ("::", False), ("10.1.2.3", False), ("::ffff:10.1.2.3", False), ("fe80::1%eth0", False), ("nonsense", False)],
)
def test_is_loopback(ip: str, expected: bool) -> None:
    assert is_loopback(ip) is expected


def test_ray_environment() -> None:
    assert ray_environment(True, {}) == {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                                         "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    joined = ray_environment(False, {"RAY_AUTH_MODE": "token"})
    assert joined == {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


@pytest.mark.parametrize("kwargs, match", [({"num_cpus": -1}, "num_cpus"), ({"num_gpus": "1"}, "num_gpus"),
                                           ({"address": "localhost"}, "host:port")])
def test_start_ray_rejects_bad_arguments_before_starting(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        with start_ray(**kwargs):
            pass
    assert not ray.is_initialized()


# --- integration: embedded ----------------------------------------------------------------------
@pytest.mark.integration
def test_embedded_ray_is_loopback_only_and_cleans_its_fallback_dir(tmp_path: Path) -> None:
    long_run_dir = tmp_path / "runs" / ("search-with-a-long-descriptive-name-" * 2) / "ray"
    with start_ray(num_cpus=2, temp_dir=long_run_dir) as rt:
        assert rt.embedded and rt.node_ips == ("127.0.0.1",) and rt.resources["CPU"] == 2.0
        assert rt.temp_dir_is_fallback and list(rt.temp_dir.glob("session_*"))
        assert is_loopback(rt.address.rpartition(":")[0])

        @ray.remote(num_cpus=1)
        def where() -> str:
            return ray.util.get_node_ip_address()

        assert ray.get(where.remote()) == "127.0.0.1"
        sockets = listening_sockets(embedded_ray_pids())
        assert sockets and [s for s in sockets if not is_loopback(s.ip)] == []
        with pytest.raises(RuntimeError, match="already initialised"):
            with start_ray(num_cpus=1):
                pass
        fallback = rt.temp_dir
    assert not ray.is_initialized() and not fallback.exists() and not long_run_dir.exists()
    assert wait_until_gone(processes_under(fallback), timeout_s=30)


_FRESH_PROCESS = """
import json, os, sys
import ray
from ray._private import ray_constants
switch_at_import = ray_constants.ENABLE_RAY_CLUSTER
from evoloss.search.ray_runtime import embedded_ray_pids, is_loopback, listening_sockets, start_ray
with start_ray(num_cpus=1, temp_dir=sys.argv[1]) as rt:
    outside = [s.ip for s in listening_sockets(embedded_ray_pids()) if not is_loopback(s.ip)]
    auth = os.environ.get("RAY_AUTH_MODE")
print(json.dumps({"switch_at_import": switch_at_import, "node_ips": rt.node_ips, "outside": outside,
                  "auth": auth, "auth_after": os.environ.get("RAY_AUTH_MODE"), "temp_dir": str(rt.temp_dir),
                  "fallback": rt.temp_dir_is_fallback}))
"""


@pytest.mark.integration
def test_fresh_process_without_the_switch_gets_loopback_and_keeps_a_short_temp_dir() -> None:
    """The CLI path: ray imported before start_ray, no RAY_* variables set; a short run dir keeps Ray's logs."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}
    run_dir = Path(tempfile.mkdtemp(prefix="evl-", dir="/tmp"))
    try:
        done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(run_dir / "ray")], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got == {"switch_at_import": True, "node_ips": ["127.0.0.1"], "outside": [], "auth": "disabled",
                       "auth_after": None, "temp_dir": str(run_dir / "ray"), "fallback": False}
        assert list((run_dir / "ray").glob("session_*/logs"))  # Ray's logs stay with the run
        assert wait_until_gone(processes_under(run_dir), timeout_s=30)
    finally:
        stop_processes_under(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


# --- integration: a real 2-node cluster on one machine --------------------------------------------
def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ray_start(args: list[str], temp_dir: Path) -> None:
    env = {**os.environ, **ray_environment(embedded=False), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" would refuse the second node
    cmd = [RAY_CLI, "start", *args, "--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


@pytest.mark.integration
@pytest.mark.slow
def test_two_node_cluster_runs_jobs_on_both_nodes_over_loopback(tmp_path: Path) -> None:
    head_dir, _ = ray_temp_dir(tmp_path / "head")  # tmp_path is too long for Ray's sockets: short dirs
    node_dir, _ = ray_temp_dir(tmp_path / "node")
    port = _free_port("127.0.0.2")
    try:
        _ray_start(["--head", f"--port={port}", "--node-ip-address=127.0.0.2", "--include-dashboard=false"], head_dir)
        _ray_start([f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3"], node_dir)
        with start_ray(address=f"127.0.0.2:{port}", python_paths=[REPO_ROOT]) as rt:
            assert not rt.embedded and rt.node_ips == ("127.0.0.2", "127.0.0.3") and rt.temp_dir is None
            cfg = PoolConfig(materializer=tt.MATERIALIZER, trainer_modules=tt.MODULES, poll_s=0.2)
            with ActorPool(cfg) as pool:
                assert pool.size == 2
                results = pool.run_jobs([tt.make_job(f"n{i}", seed=i, sleep_s=0.5) for i in range(6)], timeout_s=120)
            assert [r.status for r in results] == ["ok"] * 6
            assert {r.node_ip for r in results} == {"127.0.0.2", "127.0.0.3"}
            assert {r.records[0]["node_ip"] for r in results} == {"127.0.0.2", "127.0.0.3"}
            _assert_cluster_traffic_on_loopback(processes_under(head_dir) + processes_under(node_dir))
    finally:
        started = processes_under(head_dir) + processes_under(node_dir)
        stop_processes_under(head_dir)
        stop_processes_under(node_dir)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(node_dir, ignore_errors=True)
    assert len(started) >= 4 and wait_until_gone(started, timeout_s=30)  # gcs, 2 raylets, agents, workers
    ps = subprocess.run(["ps", "-eo", "pid,args", "-ww"], capture_output=True, text=True).stdout
    assert [ln for ln in ps.splitlines() if str(head_dir) in ln or str(node_dir) in ln] == []


def _assert_cluster_traffic_on_loopback(procs: list) -> None:
    """Every established connection is loopback to loopback; listeners are loopback or Ray's wildcard
    bind (Ray 2.60 binds non-127.0.0.1 nodes to the wildcard), never a specific outside address."""
    pids = [p.pid for p in procs] + [os.getpid()]
    assert len(procs) >= 4
    for s in listening_sockets(pids):
        assert is_loopback(s.ip) or ipaddress.ip_address(s.ip).is_unspecified, s
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        for c in conns:
            if c.raddr:
                assert is_loopback(c.laddr.ip) and is_loopback(c.raddr.ip), (pid, c)
