"""Starting Ray for evoloss: an embedded single node on 127.0.0.1 (default) or joining a cluster.

`start_ray()` is a context manager that shuts Ray down on exit. The embedded default follows
Set-up: usage stats off, one ``RAY_AUTH_MODE`` for every process (``disabled`` unless the
environment sets one), no dashboard, and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` so that Ray takes
127.0.0.1 as its node address and binds its servers there (by default it picks the machine's
external interface, and even rewrites a given ``127.0.0.1``). Ray reads that switch when it is
imported, so if ray was imported before `start_ray` the switch is also applied to Ray's loaded
constant for the duration of the call; after start-up the node address and every listening socket
of the Ray processes are checked, and a non-loopback one stops Ray with an error.

Ray's temp dir goes inside the run directory when the path is short enough: Ray puts unix sockets
at ``<temp>/session_<date>_<pid>/sockets/plasma_store`` and a unix socket path has at most 107 bytes,
which leaves `MAX_TEMP_DIR_LEN` characters for the temp dir. A longer (or no) path falls back to a
fresh ``/tmp/evoloss-ray-<random>`` directory that is removed on exit.

Ownership: ``start_ray(owner=TOKEN)`` puts ``EVOLOSS_RAY_OWNER=TOKEN`` into the environment the
embedded node's processes start with (GCS, raylet, agents and every worker inherit it), and the
caller records the token and the node's processes by pid and start time (`process_identities`).
`owned_processes` finds exactly the processes carrying the token later (a SIGKILLed coordinator's
leftovers, workers and agents started after the record included), never by a substring of a
command line, so no other process, whatever its arguments, is ever signalled. ``ray.init`` replaces
the SIGTERM handler of the driver; `start_ray` puts the caller's back, so a search stops at its own
safe point.

Joining (``address="host:port"``) connects to an existing cluster; its nodes chose their own
addresses and temp dirs. Note (Ray 2.60, checked here): nodes started with a loopback
``--node-ip-address`` other than 127.0.0.1 (e.g. 127.0.0.2) connect over loopback but their gRPC
servers listen on the wildcard address; only the embedded 127.0.0.1 node listens on loopback alone.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Iterator, Sequence

import ray
import psutil  # ships with ray (ray/thirdparty_files, on sys.path once ray is imported)
from ray.exceptions import RayActorError, RayError, RayTaskError  # noqa: F401  (re-exported for search.dispatch)

from evoloss.workers.user_code import user_runtime_env

SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = "/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store.10"  # widest pid, a retry index
MAX_TEMP_DIR_LEN = SOCKET_PATH_MAX - len(_SOCKET_SUFFIX)
DEFAULT_AUTH_MODE = "disabled"
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
OWNER_ENV = "EVOLOSS_RAY_OWNER"


def tune_api() -> SimpleNamespace:
    """Ray Tune's pieces that `search.tune_engine` builds on, imported on first use (≈1 s, only the
    Tune engine pays it). This module is the coordinator's one door to Ray: every other module of
    ``search`` reaches Ray through it."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search import ConcurrencyLimiter, Searcher

    return SimpleNamespace(tune=tune, CSVLoggerCallback=CSVLoggerCallback, JsonLoggerCallback=JsonLoggerCallback,
                           ConcurrencyLimiter=ConcurrencyLimiter, Searcher=Searcher)


@dataclass(frozen=True)
class RayRuntime:
    """The Ray this process is connected to: GCS address, whether we started it, where it keeps its files."""

    address: str
    embedded: bool
    temp_dir: Path | None
    temp_dir_is_fallback: bool
    node_ips: tuple[str, ...]
    resources: dict[str, float]
    session_name: str = ""  # Ray's session id (session_<date>_<time>_<pid>)


@dataclass(frozen=True)
class ListeningSocket:
    """A TCP socket in LISTEN state and the process holding it."""

    pid: int
    process: str
    ip: str
    port: int


def ray_environment(embedded: bool, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables evoloss sets for Ray (processes inherit them).

    Usage stats off; ``RAY_AUTH_MODE`` kept when set, else ``disabled`` (one mode for every process of
    a cluster, or a second node fails with InvalidAuthToken); for the embedded node the loopback switch.
    """
    environ = os.environ if environ is None else environ
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": environ.get("RAY_AUTH_MODE") or DEFAULT_AUTH_MODE}
    if embedded:
        env[_CLUSTER_SWITCH] = "0"
    return env


def ray_temp_dir(preferred: str | Path | None) -> tuple[Path, bool]:
    """``(directory, is_fallback)``: ``preferred`` (created) if its absolute path has at most
    `MAX_TEMP_DIR_LEN` characters, else a new ``/tmp/evoloss-ray-<random>`` that the caller removes."""
    if preferred is not None:
        path = Path(preferred).expanduser().absolute()
        if len(str(path).encode()) <= MAX_TEMP_DIR_LEN:
            path.mkdir(parents=True, exist_ok=True)
            return path, False
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="evoloss-ray-", dir=base)), True


def check_address(address: str) -> str:
    """Validate a ``host:port`` cluster address (what ``ray start --head`` printed)."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address={address!r} must be 'host:port' of a Ray head (e.g. 127.0.0.2:6379)")
    return f"{host}:{int(port)}"


def _check_count(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise ValueError(f"{name} must be a number >= 0 or None (= detect); got {value!r}")


@contextlib.contextmanager
def start_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    temp_dir: str | Path | None = None,
    python_paths: Sequence[str | Path] = (),
    log_to_driver: bool = False,
    owner: str | None = None,
) -> Iterator[RayRuntime]:
    """Start an embedded Ray on 127.0.0.1 (``address=None``) or join the cluster at ``address``.

    Args:
        num_cpus, num_gpus: resources of the embedded node (None: the machine's); ignored when joining.
        temp_dir: Ray's temp dir for the embedded node, e.g. ``runs/<id>/ray`` (see module docstring).
        python_paths: directories prepended to the workers' PYTHONPATH (e.g. where test trainers live).
        log_to_driver: stream worker stdout/stderr to this process (off: they stay in Ray's log files).
        owner: a token every process of the embedded node carries in its environment (`OWNER_ENV`).
    Raises:
        ValueError: bad address or resource counts. RuntimeError: Ray already running in this process,
        or the embedded node is not on loopback.
    """
    _check_count("num_cpus", num_cpus)
    _check_count("num_gpus", num_gpus)
    address = None if address is None else check_address(address)
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; call ray.shutdown() first")
    embedded = address is None
    kwargs: dict = {"log_to_driver": log_to_driver}
    if python_paths:
        paths = [str(Path(p).absolute()) for p in python_paths] + [os.environ.get("PYTHONPATH", "")]
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}}
    shipped = user_runtime_env([temp_dir] if temp_dir else [])  # users' models/plug-ins (workers.user_code)
    if shipped:
        env = kwargs.get("runtime_env", {})
        kwargs["runtime_env"] = {**shipped, "env_vars": {**shipped["env_vars"], **env.get("env_vars", {})}}
    tmp, fallback = ray_temp_dir(temp_dir) if embedded else (None, False)
    try:
        with _ray_switches(embedded, {OWNER_ENV: owner} if owner and embedded else {}):
            try:
                with _keep_sigterm_handler():
                    if embedded:
                        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _temp_dir=str(tmp),
                                 **kwargs)
                    else:
                        ray.init(address=address, **kwargs)
                runtime = _describe(embedded, tmp, fallback)
                if embedded:
                    _check_loopback(runtime)
                yield runtime
            finally:
                ray.shutdown()
    finally:
        if fallback and tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """``ray.init`` installs a SIGTERM handler (``sys.exit``) in the driver: put the caller's back."""
    main = threading.current_thread() is threading.main_thread()
    saved = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and saved is not None:
            signal.signal(signal.SIGTERM, saved)


@contextlib.contextmanager
def _ray_switches(embedded: bool, extra: dict[str, str] | None = None) -> Iterator[None]:
    """Set `ray_environment` (and Ray's already-loaded loopback constant) for the block; restore after."""
    from ray._private import ray_constants  # the constant Ray computed from the switch at import

    env = {**ray_environment(embedded), **(extra or {})}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_switch = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(env)
    if embedded:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_switch
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _describe(embedded: bool, tmp: Path | None, fallback: bool) -> RayRuntime:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return RayRuntime(
        address=str(ray.get_runtime_context().gcs_address),
        embedded=embedded,
        temp_dir=tmp,
        temp_dir_is_fallback=fallback,
        node_ips=tuple(sorted(str(n["NodeManagerAddress"]) for n in nodes)),
        resources={k: float(v) for k, v in ray.cluster_resources().items()},
        session_name=str(ray.get_runtime_context().get_session_name()),
    )


def _check_loopback(runtime: RayRuntime) -> None:
    outside = [ip for ip in runtime.node_ips if not is_loopback(ip)]
    outside += [f"{s.process}(pid {s.pid}) on {s.ip}:{s.port}" for s in listening_sockets(embedded_ray_pids())
                if not is_loopback(s.ip)]
    if outside:
        raise RuntimeError(
            f"the embedded Ray is reachable outside loopback: {outside}. Set {_CLUSTER_SWITCH}=0 in the "
            "environment before Python starts, or join an existing cluster (cluster.address)"
        )


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``); False for wildcards."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool((mapped or addr).is_loopback)


def embedded_ray_pids() -> list[int]:
    """This process and its descendants: the driver and every process of an embedded Ray."""
    me = psutil.Process()
    return [me.pid] + [p.pid for p in me.children(recursive=True)]


def listening_sockets(pids: Iterable[int]) -> list[ListeningSocket]:
    """The TCP sockets in LISTEN state held by ``pids`` (processes that exited meanwhile are skipped)."""
    found: list[ListeningSocket] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        found += [ListeningSocket(pid, name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def process_identities(pids: Iterable[int]) -> list[tuple[int, float]]:
    """``(pid, start time)`` of each live process of ``pids``: an identity a reused pid cannot fake."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append((int(pid), float(psutil.Process(pid).create_time())))
    return found


def owned_processes(owner: str | None) -> list[psutil.Process]:
    """Live processes whose environment carries ``OWNER_ENV=owner`` (the token `start_ray` gave the
    node's processes when they started); never this process, never chosen by command line."""
    if not owner:
        return []
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(OWNER_ENV) == owner:
                found.append(proc)
    return [p for p in found if _alive(p)]


def stop_processes(procs: Sequence[psutil.Process], timeout_s: float = 15.0) -> list[psutil.Process]:
    """SIGTERM ``procs``, then SIGKILL what is left after ``timeout_s``; returns ``procs``."""
    for signal_all in (psutil.Process.terminate, psutil.Process.kill):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                signal_all(proc)
        if wait_until_gone(procs, timeout_s):
            break
    return list(procs)


def processes_under(temp_dir: str | Path) -> list[psutil.Process]:
    """Live processes whose command line names ``temp_dir`` (a node started by hand with ``ray start
    --temp-dir``), plus their descendants; never this process. For tests and scripts that started
    such a node themselves: evoloss never reaps by this (see `owned_processes`)."""
    key, me = str(temp_dir), os.getpid()
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != me and key in " ".join(proc.info.get("cmdline") or ()):
            roots.append(proc)
    found = {p.pid: p for p in roots}
    for proc in roots:
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in proc.children(recursive=True) if c.pid != me})
    return [p for p in found.values() if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_processes_under(temp_dir: str | Path, timeout_s: float = 15.0) -> list[psutil.Process]:
    """End the Ray node(s) started with ``--temp-dir`` inside ``temp_dir``, by pid (SIGTERM, then
    SIGKILL after ``timeout_s``). A scoped ``ray stop``: other Ray instances on the machine are left
    alone. Returns the processes it signalled."""
    return stop_processes(processes_under(temp_dir), timeout_s)


def wait_until_gone(procs: Sequence[psutil.Process], timeout_s: float) -> bool:
    """Poll until every process has exited (a zombie counts as exited); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


__all__ = [
    "DEFAULT_AUTH_MODE",
    "ListeningSocket",
    "MAX_TEMP_DIR_LEN",
    "OWNER_ENV",
    "RayRuntime",
    "check_address",
    "embedded_ray_pids",
    "is_loopback",
    "listening_sockets",
    "owned_processes",
    "process_identities",
    "processes_under",
    "ray_environment",
    "ray_temp_dir",
    "start_ray",
    "stop_processes",
    "stop_processes_under",
    "wait_until_gone",
]
