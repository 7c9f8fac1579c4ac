"""Users' data, model factories and loss families through the config, the CLI and the Python API.

Fast tier: malformed data files are one line + exit 2 with no run directory; a user's factory and a
plug-in module resolve from the working directory; a plug-in family with two parameters is searched
(in-process pool), exported, and its standalone module matches in value and gradient in a
``python -I`` process that cannot import evoloss. Slow tier: the whole thing on Ray (embedded, and a
2-node loopback cluster whose worker node does not have the user's modules).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from evoloss.search.cli import main
from evoloss.workers import user_code

MODELS = '''
import torch.nn as nn


def make_net(input_shape, num_classes):
    size = 1
    for d in input_shape:
        size *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(size, 16), nn.ReLU(), nn.Linear(16, num_classes))


def wrong_output(input_shape, num_classes):
    return nn.Linear(input_shape[0], num_classes + 1)
'''

LOSSES = '''
import torch
import torch.nn.functional as F

from evoloss.losses.registry import Param, register_family


@register_family("blend_ce_mae", params=[Param("w", default=0.5, low=0.0, high=1.0),
                                         Param("t", default=1.0, low=0.1, high=5.0)])
def blend_ce_mae(logits, targets, w=0.5, t=1.0):
    """w * CE(logits / t) + (1 - w) * (1 - p_y(logits / t))."""
    log_p = F.log_softmax(logits / t, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    return w * (-log_p) + (1 - w) * (1 - torch.exp(log_p))
'''


def write_project(root: Path, n: int = 240, seed: int = 0) -> Path:
    """A user's project folder: d.npz (40% given noise, clean labels known), my_models.py, my_losses.py."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 6))
    clean = rng.integers(0, 3, n)
    x = (centres[clean] + rng.normal(size=(n, 6))).astype(np.float32)
    flip = rng.random(n) < 0.4
    given = np.where(flip, (clean + rng.integers(1, 3, n)) % 3, clean)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "d.npz", x_train=x, y_train=given, y_train_clean=clean)
    (root / "my_models.py").write_text(MODELS)
    (root / "my_losses.py").write_text(LOSSES)
    return root


def search_toml(dataset: str = "npz:d.npz", arch: str = "my_models:make_net", extra: str = "") -> str:
    return textwrap.dedent(f'''\
        plugins = ["my_losses"]
        {extra}
        [search]
        family = "blend_ce_mae"
        popsize = 4
        generations = 2

        [grid]
        datasets = ["{dataset}"]
        archs = ["{arch}"]
        noise = [{{type = "given"}}]

        [train]
        epochs = 2
        trainer = "standard"

        [cluster]
        num_cpus = 2
        ''')


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh user project as the working directory. Its modules stay imported (a family registers
    once per process, as in a notebook); what was recorded for shipping is forgotten afterwards."""
    root = write_project(tmp_path / "project")
    monkeypatch.chdir(root)
    yield root
    user_code.clear_recorded()


# --- malformed files: one line, exit 2, nothing written ------------------------------------------
def _arrays(**changes):
    rng = np.random.default_rng(0)
    out = {"x_train": rng.normal(size=(30, 6)).astype(np.float32), "y_train": rng.integers(0, 3, 30),
           "y_train_clean": rng.integers(0, 3, 30)}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


BAD_NPZ = [
    ("missing-x", _arrays(x_train=None), "array 'x_train' is missing"),
    ("missing-y", _arrays(y_train=None), "array 'y_train' is missing"),
    ("lengths", _arrays(y_train=np.zeros(29, dtype=np.int64)), "has 29 labels for 30 rows"),
    ("out-of-range", _arrays(num_classes=np.int64(3), y_train=np.full(30, 5)), "label 5 outside"),
    ("negative", _arrays(y_train=np.full(30, -1)), "negative labels"),
    ("float-labels", _arrays(y_train=np.zeros(30)), "not integer class indices"),
    ("one-hot", _arrays(y_train=np.eye(3, dtype=np.int64)[np.zeros(30, dtype=int)]), "not one label per sample"),
    ("nan", _arrays(x_train=np.full((30, 6), np.nan, dtype=np.float32)), "NaN or inf values in 30 row"),
    ("inf", _arrays(x_train=np.where(np.eye(30, 6) > 0, np.inf, 0.0)), "NaN or inf values in 6 row"),
    ("text-inputs", _arrays(x_train=np.full((30, 6), "a")), "not real numbers"),
    ("empty", _arrays(x_train=np.zeros((0, 6)), y_train=np.zeros(0, dtype=np.int64),
                      y_train_clean=np.zeros(0, dtype=np.int64)), "is empty"),
    ("pickle", _arrays(x_train=np.array([{"a": 1}] * 30, dtype=object)), "holds Python objects"),
    ("half-pair", _arrays(x_val=np.zeros((5, 6))), "array 'y_val' is missing while 'x_val' is given"),
    ("typo", _arrays(y_trian=np.zeros(30, dtype=np.int64)), "did you mean 'y_train'"),
    ("test-shape", _arrays(x_test=np.zeros((4, 5)), y_test=np.zeros(4, dtype=np.int64)), "sample shape (5,)"),
    ("no-clean-subset", _arrays(y_train_clean=None), "'y_train_clean' and 'x_val'/'y_val' are missing"),
]


def _cli_refuses(config: str, capsys, out: Path) -> str:
    assert main(["search", config, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("case, arrays, match", BAD_NPZ, ids=[c[0] for c in BAD_NPZ])
def test_malformed_npz_is_one_line_exit_2_and_no_run_dir(case, arrays, match, project, capsys) -> None:
    np.savez(project / "bad.npz", **arrays)  # np.savez pickles object arrays; evoloss must refuse them
    (project / "s.toml").write_text(search_toml("npz:bad.npz"))
    err = _cli_refuses("s.toml", capsys, project / "run")
    assert match in err and "bad.npz" in err, err


OTHER_BAD = [
    ("unreadable", "npz:junk.npz", "is not a readable .npz archive"),
    ("missing-file", "npz:nothing.npz", "does not exist"),
    ("table-label", "table:t.csv,label=target", "column 'target' (label=) is missing"),
    ("table-feature", "table:t.csv,label=y", "column 'f2' has dtype"),
    ("table-option", "table:t.csv,lable=y", "Did you mean 'label'"),
    ("folder-layout", "folder:imgs", "has no train/ folder"),
]


@pytest.mark.parametrize("case, dataset, match", OTHER_BAD, ids=[c[0] for c in OTHER_BAD])
def test_other_malformed_files_are_one_line_exit_2(case, dataset, match, project, capsys) -> None:
    (project / "junk.npz").write_bytes(b"not a zip file at all")
    (project / "t.csv").write_text("f1,f2,y\n1.0,a,0\n2.0,b,1\n")
    (project / "imgs").mkdir()
    (project / "s.toml").write_text(search_toml(dataset))
    err = _cli_refuses("s.toml", capsys, project / "run")
    assert match in err, err


def test_a_factory_with_the_wrong_output_or_a_missing_module_is_refused(project, capsys) -> None:
    (project / "s.toml").write_text(search_toml(arch="my_models:wrong_output"))
    assert "must map [N, *input_shape] to logits [N, 3]; got (2, 4)" in _cli_refuses("s.toml", capsys, project / "r")
    (project / "s.toml").write_text(search_toml(arch="nowhere:make_net"))
    assert "module 'nowhere' cannot be imported" in _cli_refuses("s.toml", capsys, project / "r")
    (project / "s.toml").write_text(search_toml().replace('plugins = ["my_losses"]', 'plugins = ["my_lossez"]'))
    assert "config plugins: plugins[0]: module 'my_lossez' cannot be imported" in _cli_refuses("s.toml", capsys,
                                                                                                project / "r")


# --- a user's loss family: searched, exported, standalone ----------------------------------------
def test_user_family_is_searched_exported_and_standalone(project) -> None:
    import evoloss
    from evoloss.results.store import ParquetStore
    from evoloss.search.config import load_config, resolved_toml
    from evoloss.search.coordinator import run_search
    from evoloss.search.local_pool import InProcessPool

    (project / "s.toml").write_text(search_toml())
    config = load_config(project / "s.toml")
    assert config.grid.datasets == (f"npz:{project.resolve() / 'd.npz'}",)  # the path made absolute
    run_dir = project / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(resolved_toml(config))
    summary = run_search(config, InProcessPool(), ParquetStore(run_dir), run_id="u")
    rows = evoloss.SearchResult(run_dir).evaluations()
    assert summary.generations == 2 and len(rows) == 8 and set(rows.status) == {"ok"}
    assert set(rows.noise_convention) == {"given/file"} and set(rows.family) == {"blend_ce_mae"}
    assert set(rows.arch) == {"my_models:make_net"} and rows.noise_rate_realised.between(0.2, 0.6).all()
    assert len({json.dumps(p, sort_keys=True) for p in rows.params}) == 8  # CMA-ES moved both parameters
    path = evoloss.export(run_dir, name="blend")
    spec = json.loads(Path(path).read_text())
    assert spec["family"] == "blend_ce_mae" and set(spec["params"]) == {"w", "t"}
    _standalone_matches(Path(path).parent / "blend.py", spec["params"])


STANDALONE_CHECK = '''
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "evoloss" or name.startswith("evoloss.") or name in ("my_losses",):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, sys.argv[1])
import torch
from blend import Blend
torch.manual_seed(0)
logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
targets = torch.tensor([0, 1, 2, 0, 1, 2])
value = Blend()(logits, targets)
(grad,) = torch.autograd.grad(value, logits)
print(json.dumps({"value": value.item(), "grad": grad.reshape(-1).tolist()}))
'''


def _standalone_matches(module: Path, params: dict) -> None:
    """The plug-in module in ``python -I`` (no evoloss, no user module) against the formula in float64."""
    import torch

    done = subprocess.run([sys.executable, "-I", "-c", STANDALONE_CHECK, str(module.parent)], capture_output=True,
                          text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    torch.manual_seed(0)
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    w, t = params["w"], params["t"]
    p_y = torch.softmax(logits / t, dim=1)[torch.arange(6), targets]
    value = (w * -torch.log(p_y) + (1 - w) * (1 - p_y)).mean()
    (grad,) = torch.autograd.grad(value, logits)
    assert got["value"] == pytest.approx(value.item(), rel=1e-12)
    np.testing.assert_allclose(got["grad"], grad.reshape(-1).numpy(), rtol=1e-10, atol=1e-14)


# --- on Ray: embedded (Python API) and a 2-node loopback cluster (CLI) ---------------------------
COMPARE_TOML = '''
plugins = ["my_losses"]

[compare]
meta_per_class = 0

[train]
epochs = 2

[cluster]
num_cpus = 2

[[methods]]
name = "ce"
kind = "loss"
family = "ce"

[[methods]]
name = "evolved"
kind = "plugin"
path = "run/export/blend/loss.json"

[[methods]]
name = "cleanlab"
kind = "cleanlab"
options = {folds = 3}

[[tasks]]
name = "mine"
datasets = ["npz:d.npz"]
archs = ["my_models:make_net"]
noise = [{type = "given"}]
seeds = [0]
'''


def _check_compare_rows(rows) -> None:
    assert list(rows.method) == ["ce", "evolved", "cleanlab"] and set(rows.status) == {"ok"}, rows.error.tolist()
    extra = rows.extra.iloc[2]
    pruning = (json.loads(extra) if isinstance(extra, str) else extra)["cleanlab"]
    assert pruning["flagged"] > 0 and 0 < pruning["precision"] <= 1 and 0 < pruning["recall"] <= 1


@pytest.mark.integration
@pytest.mark.slow
def test_api_search_and_compare_on_embedded_ray(project) -> None:
    import evoloss

    (project / "s.toml").write_text(search_toml())
    run = evoloss.search(str(project / "s.toml"), out=project / "run", progress=False)
    assert set(run.evaluations().status) == {"ok"}
    evoloss.export(run, name="blend")
    (project / "c.toml").write_text(COMPARE_TOML)
    result = evoloss.compare(str(project / "c.toml"), out=project / "cmp", progress=False)
    _check_compare_rows(result.evaluations())
    # the same from the command line (a fresh process: the modules come from the working directory)
    _evoloss(["search", "s.toml", "--out", "run-cli"], project)
    _evoloss(["compare", "c.toml", "--out", "cmp-cli"], project)
    import pandas as pd

    _check_compare_rows(pd.read_parquet(project / "cmp-cli" / "evaluations"))


def _evoloss(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run([str(Path(sys.executable).parent / "evoloss"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.integration
@pytest.mark.slow
def test_cli_search_and_compare_on_a_two_node_cluster_without_the_modules(project, tmp_path) -> None:
    import pandas as pd

    from evoloss.search.ray_runtime import ray_environment, ray_temp_dir, stop_processes_under
    from tests.search.test_ray_runtime import RAY_CLI, _free_port

    head_dir, _ = ray_temp_dir(tmp_path / "head")
    node_dir, _ = ray_temp_dir(tmp_path / "node")
    elsewhere = tmp_path / "elsewhere"  # the nodes start here, with no PYTHONPATH: my_models is not importable
    elsewhere.mkdir()
    env = {**os.environ, **ray_environment(embedded=False)}
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH"):
        env.pop(key, None)

    def ray_start(args: list[str], temp_dir: Path) -> None:
        cmd = [RAY_CLI, "start", *args, "--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
        done = subprocess.run(cmd, env=env, cwd=elsewhere, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]

    port = _free_port("127.0.0.2")
    try:
        ray_start(["--head", f"--port={port}", "--node-ip-address=127.0.0.2", "--include-dashboard=false"], head_dir)
        ray_start([f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3"], node_dir)
        (project / "s.toml").write_text(search_toml())
        (project / "c.toml").write_text(COMPARE_TOML)
        address = f"127.0.0.2:{port}"
        _evoloss(["search", "s.toml", "--out", "run", "--address", address], project)
        _evoloss(["export", "run", "--name", "blend"], project)
        _evoloss(["compare", "c.toml", "--out", "cmp", "--address", address], project)
        assert set(pd.read_parquet(project / "run" / "evaluations").status) == {"ok"}
        _check_compare_rows(pd.read_parquet(project / "cmp" / "evaluations"))
        import evoloss  # and from the Python API, joining the same cluster

        run = evoloss.search(str(project / "s.toml"), out=project / "run-api", address=address, progress=False)
        assert set(run.evaluations().status) == {"ok"}
        result = evoloss.compare(str(project / "c.toml"), out=project / "cmp-api", address=address, progress=False)
        _check_compare_rows(result.evaluations())
        # the second node got the user's modules from the run's runtime_env, not from an installation
        assert list(Path(node_dir).glob("session_*/runtime_resources/working_dir_files/*/my_models.py"))
    finally:
        stop_processes_under(head_dir)
        stop_processes_under(node_dir)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(node_dir, ignore_errors=True)


# --- the config keys ------------------------------------------------------------------------------
def test_plugins_key_given_noise_and_the_cleanlab_method_in_configs(project) -> None:
    import tomllib

    from evoloss.search.compare_config import load_compare_config, resolved_compare_toml
    from evoloss.search.config import ConfigError, load_config, parse_config, resolved_toml

    (project / "s.toml").write_text(search_toml())
    config = load_config(project / "s.toml")
    assert config.plugins.modules == ("my_losses",) and config.grid.noise[0].rate == 0.0
    assert parse_config(tomllib.loads(resolved_toml(config))) == config  # [plugins] modules round-trips
    assert "my_losses" in user_code.recorded_modules() and "my_models" in user_code.recorded_modules()
    home = Path(sys.modules["my_losses"].__file__).resolve().parent  # the project that imported it first
    env = user_code.user_runtime_env([home / "run" / "ray"])
    assert env["working_dir"] == str(home) and {"*.npz", "/run/ray"} <= set(env["excludes"])
    from ray._private.runtime_env.packaging import _get_excludes  # the matcher Ray packs the directory with

    shipped = _get_excludes(home, env["excludes"])
    for earlier in ("search1/ray/session_latest", "sub/cmp/ray/session_2026-12-01_20-24-44_058165_4848"):
        assert shipped(home / earlier / "runtime_resources" / "working_dir_files" / "pkg" / "my_losses.py")
    assert not shipped(home / "my_losses.py") and not shipped(home / "ray" / "notes.py")
    assert set(env["env_vars"][user_code.USER_MODULES_ENV].split(",")) == {"my_losses", "my_models"}
    with pytest.raises(ConfigError, match="type 'given' takes no rate"):
        load_config(project / "s.toml", overrides={"grid.noise": [{"type": "given", "rate": 0.3}]})
    with pytest.raises(ConfigError, match="'given' trains on a dataset's own labels, but 'digits'"):
        load_config(project / "s.toml", overrides={"grid.datasets": ["digits"], "grid.archs": ["mlp2"]})
    (project / "c.toml").write_text(COMPARE_TOML.replace("run/export/blend/loss.json", "x.json"))
    compare = load_compare_config(project / "c.toml")
    assert compare.methods[2].kind == "cleanlab" and compare.tasks[0].datasets[0].startswith("npz:/")
    assert "[plugins]" in resolved_compare_toml(compare)
    with pytest.raises(ConfigError, match="methods\\[2\\].options: rejected by the cleanlab method"):
        load_compare_config(project / "c.toml", overrides={"methods.cleanlab.options": {"folds": 1}})
