"""The loss plug-in: export -> load round trip, the standalone module in a clean process, bad files."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoloss import losses  # noqa: F401  (registers every family)
from evoloss.losses import registry
from evoloss.losses.module import create_loss
from evoloss.losses.plugin import (
    export_plugin,
    load_loss,
    plugin_class_name,
    read_loss_file,
    read_plugin,
    standalone_source,
)
from evoloss.losses.registry import Family, LossSpec, Param, get_family, list_losses

TEST_FAMILY = "plugintest_scaled"
_MODULE_SCALE = 2.0


# --- a test-only family with parameters and a helper (registered per test, then removed) -------
def _margin_term(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 − p_y, per sample."""
    return 1.0 - F.softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]


def _scaled_ce(logits: torch.Tensor, targets: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """scale·CE + shift·(1 − p_y), per sample."""
    return scale * F.cross_entropy(logits, targets, reduction="none") + shift * _margin_term(logits, targets)


def _uses_module_constant(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _MODULE_SCALE * F.cross_entropy(logits, targets, reduction="none")


def _family(fn: Callable, helpers: tuple = (), params: tuple = ()) -> Family:
    return Family(name=TEST_FAMILY, fn=fn, params=params, helpers=helpers)


SCALED_PARAMS = (
    Param("scale", default=1.0, low=0.0, high=10.0, low_open=True),
    Param("shift", default=0.0, low=-1.0, high=1.0),
)


@pytest.fixture()
def scaled_family(monkeypatch: pytest.MonkeyPatch) -> Family:
    family = _family(_scaled_ce, helpers=(_margin_term,), params=SCALED_PARAMS)
    monkeypatch.setitem(registry._FAMILIES, TEST_FAMILY, family)
    return family


def _random_spec(name: str) -> LossSpec:
    """A valid spec of family ``name``: its genome decoded from a per-family seeded normal draw."""
    family = get_family(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return LossSpec(name, family.decode(rng.normal(size=family.dim)))


def _inputs(seed: int = 0, batch: int = 7, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(batch, classes, dtype=torch.float64, generator=generator)
    targets = torch.randint(0, classes, (batch,), generator=generator)
    return logits, targets


def _value_and_grad(loss: Callable, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.clone().requires_grad_(True)
    value = loss(x, targets)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# --- round trip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_losses())
def test_export_load_same_values_and_gradients(name: str, tmp_path: Path) -> None:
    spec = _random_spec(name)
    out = export_plugin(spec, tmp_path / "plugin", name=f"plugin_{name}", provenance={"run": "r1", "fitness": 0.5})
    loaded = load_loss(out / "loss.json")
    logits, targets = _inputs()
    want_value, want_grad = _value_and_grad(create_loss(spec), logits, targets)
    got_value, got_grad = _value_and_grad(loaded, logits, targets)
    assert torch.equal(got_value, want_value) and torch.equal(got_grad, want_grad)
    assert torch.equal(loaded(logits, targets, reduction="none"), create_loss(spec)(logits, targets, reduction="none"))
    spec_back, meta = read_plugin(out)
    assert spec_back == spec.resolved() and meta["provenance"] == {"run": "r1", "fitness": 0.5}


def test_loss_json_fields_and_float_literals(scaled_family: Family, tmp_path: Path) -> None:
    spec = LossSpec(TEST_FAMILY, {"scale": 1 / 3, "shift": -0.1})
    out = export_plugin(spec, tmp_path / "p", name="my_loss")
    doc = json.loads((out / "loss.json").read_text())
    assert doc == {
        "format": "evoloss-loss", "format_version": 1, "name": "my_loss", "family": TEST_FAMILY,
        "params": {"scale": 1 / 3, "shift": -0.1}, "normalisation": "none", "provenance": {},
    }
    source = (out / "my_loss.py").read_text()
    assert f"PARAMS = {{'scale': {1 / 3!r}, 'shift': -0.1}}" in source
    assert "register_family" not in source and not re.search(r"^\s*(from|import) evoloss\b", source, re.M)
    assert "class MyLoss(FamilyLoss)" in source
    assert sorted(p.name for p in out.iterdir()) == ["loss.json", "my_loss.py"]


def test_defaults_are_written_out(scaled_family: Family, tmp_path: Path) -> None:
    out = export_plugin(LossSpec(TEST_FAMILY, {"shift": 0.25}), tmp_path / "p")
    assert json.loads((out / "loss.json").read_text())["params"] == {"scale": 1.0, "shift": 0.25}


def test_normalisation_name_read_from_the_family_function(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def rule() -> None:
        """A stand-in normalisation rule; only its name matters here."""

    monkeypatch.setattr(_scaled_ce, "normalisation", rule, raising=False)
    monkeypatch.setitem(registry._FAMILIES, TEST_FAMILY, _family(_scaled_ce, (_margin_term,), SCALED_PARAMS))
    out = export_plugin(LossSpec(TEST_FAMILY), tmp_path / "p")
    assert json.loads((out / "loss.json").read_text())["normalisation"] == "rule"
    assert "NORMALISATION = 'rule'" in (out / "evolved_loss.py").read_text()
    assert read_plugin(out)[1]["normalisation"] == "rule"


def test_read_loss_file_accepts_plain_specs(scaled_family: Family, tmp_path: Path) -> None:
    plain = tmp_path / "spec.json"
    plain.write_text(json.dumps({"family": TEST_FAMILY, "params": {"scale": 2}}))
    assert read_loss_file(plain) == (TEST_FAMILY, LossSpec(TEST_FAMILY, {"scale": 2.0, "shift": 0.0}))
    plain.write_text(json.dumps({"family": "ce", "name": "baseline"}))
    assert read_loss_file(plain) == ("baseline", LossSpec("ce", {}))
    out = export_plugin(LossSpec(TEST_FAMILY), tmp_path / "p", name="found")
    assert read_loss_file(out / "loss.json")[0] == "found"


def test_overwrite_replaces_the_whole_directory(tmp_path: Path) -> None:
    out = tmp_path / "p"
    export_plugin(LossSpec("ce"), out, name="first")
    with pytest.raises(ValueError, match="not empty.*overwrite=True"):
        export_plugin(LossSpec("ce"), out, name="second")
    export_plugin(LossSpec("ce"), out, name="second", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["loss.json", "second.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_failed_export_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import evoloss.losses.plugin.files as plugin

    calls: list[Path] = []

    def failing_write(path: Path, text: str) -> None:
        calls.append(path)
        if path.suffix == ".py":
            raise OSError("disk full (simulated)")
        path.write_text(text)

    monkeypatch.setattr(plugin, "_write_text", failing_write)
    with pytest.raises(OSError, match="simulated"):
        export_plugin(LossSpec("ce"), tmp_path / "p")
    assert [p.name for p in calls] == ["loss.json", "evolved_loss.py"]
    assert list(tmp_path.iterdir()) == []


# --- the standalone module, in a process that cannot import evoloss ------------------------------
_STANDALONE_CHECK = textwrap.dedent(
    """
    import importlib.abc, importlib.util, sys
    class BlockEvoloss(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("evoloss", "losses", "workers", "results", "search"):
                raise ImportError("evoloss must not be importable here: " + name)
    sys.meta_path.insert(0, BlockEvoloss())
    import torch
    cases = torch.load(sys.argv[1], weights_only=True)
    worst = 0.0
    for name, case in cases.items():
        spec = importlib.util.spec_from_file_location(case["module"], case["path"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module_class = module.__dict__[case["class"]]
        assert issubclass(module_class, torch.nn.Module)
        for reduction, loss in (("none", module_class(reduction="none")),
                                ("mean", lambda x, t: module.loss_fn(x, t, reduction="mean"))):
            x = case["logits"].clone().requires_grad_(True)
            value = loss(x, case["targets"])
            (grad,) = torch.autograd.grad(value.sum(), x)
            worst = max(worst, (value - case["value_" + reduction]).abs().max().item(),
                        (grad - case["grad_" + reduction]).abs().max().item())
        with torch.no_grad():
            total = module_class(reduction="sum")(case["logits"], case["targets"])
            worst = max(worst, abs(total.item() - case["value_none"].sum().item()))
            for options, target, want in case["extras"]:  # nn.CrossEntropyLoss's options and target forms
                worst = max(worst, (module_class(**options)(case["logits"], target) - want).abs().max().item())
    leaked = [m for m in sys.modules if m.split(".")[0] in ("evoloss", "losses", "workers", "results", "search")]
    print(f"families={len(cases)} worst={worst:.3g} leaked={leaked}")
    sys.exit(0 if worst <= 1e-6 and not leaked else 1)
    """
)


def test_standalone_module_matches_in_a_clean_process(scaled_family: Family, tmp_path: Path) -> None:
    cases = {}
    logits, targets = _inputs(seed=3, batch=6, classes=4)
    for name in list_losses():
        spec = _random_spec(name) if name != TEST_FAMILY else LossSpec(name, {"scale": 0.7, "shift": 0.3})
        out = export_plugin(spec, tmp_path / name, name=f"plugin_{name}")
        case = {"module": f"plugin_{name}", "path": str(out / f"plugin_{name}.py"),
                "class": plugin_class_name(f"plugin_{name}"), "logits": logits, "targets": targets}
        for reduction in ("mean", "none"):
            loss = create_loss(spec, reduction=reduction)
            value, grad = _value_and_grad(lambda x, t: loss(x, t).sum(), logits, targets)
            case[f"value_{reduction}"] = loss(logits, targets).detach()
            case[f"grad_{reduction}"] = grad
        soft = get_family(name).soft_targets if name != TEST_FAMILY else True
        weighted = {"weight": torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=torch.float64), "ignore_index": 1,
                    "label_smoothing": 0.1 if soft else 0.0}
        probs = torch.softmax(logits.flip(0), dim=1)
        case["extras"] = [(weighted, targets, create_loss(spec, **weighted)(logits, targets).detach())]
        if soft:  # a family without probability targets refuses them (tests/losses/test_criterion.py)
            summed = create_loss(spec, reduction="sum")(logits, probs).detach()
            case["extras"].append(({"reduction": "sum"}, probs, summed))
        cases[name] = case
    torch.save(cases, tmp_path / "cases.pt")
    (tmp_path / "check.py").write_text(_STANDALONE_CHECK)
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "check.py"), str(tmp_path / "cases.pt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"families={len(list_losses())}" in result.stdout and "leaked=[]" in result.stdout


# --- code a standalone module cannot carry -------------------------------------------------------
def test_family_using_a_module_constant_cannot_be_exported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(registry._FAMILIES, TEST_FAMILY, _family(_uses_module_constant))
    with pytest.raises(ValueError, match="global name '_MODULE_SCALE'.*helpers="):
        export_plugin(LossSpec(TEST_FAMILY), tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_family_with_an_unlisted_helper_cannot_be_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    family = _family(_scaled_ce, helpers=(), params=SCALED_PARAMS)
    with pytest.raises(ValueError, match="global name '_margin_term'"):
        standalone_source(family, {"scale": 1.0, "shift": 0.0}, "x_loss")


def test_closure_cannot_be_exported() -> None:
    factor = 3.0

    def closure_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return factor * F.cross_entropy(logits, targets, reduction="none")

    with pytest.raises(ValueError, match="module-level 'def' functions without closures"):
        standalone_source(_family(closure_loss), {}, "x_loss")


# --- malformed plug-in files: each a ValueError naming the field ---------------------------------
def _doc(**changes: object) -> dict:
    doc = {
        "format": "evoloss-loss", "format_version": 1, "name": "evolved_loss", "family": TEST_FAMILY,
        "params": {"scale": 1.5, "shift": 0.2}, "normalisation": "none", "provenance": {"run": "r"},
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP = object()
_BAD_FILES: list[tuple[str, Callable[[], str | bytes], str]] = [
    ("not-json", lambda: "{format: evoloss}", r"is not valid JSON \(.*line 1"),
    ("json-list", lambda: "[1, 2]", r"must be a JSON object.*got a JSON list"),
    ("not-utf8", lambda: b'{"format": "\xff"}', "is not UTF-8 text"),
    ("duplicate-key", lambda: '{"family": "ce", "family": "ce"}', "duplicate key 'family'"),
    ("wrong-format", lambda: json.dumps(_doc(format="onnx")), r"field 'format' is 'onnx'; expected 'evoloss-loss'"),
    ("future-version", lambda: json.dumps(_doc(format_version=2)), r"field 'format_version' is 2.*version 1"),
    ("version-as-string", lambda: json.dumps(_doc(format_version="1")), r"field 'format_version' is '1'"),
    ("missing-family", lambda: json.dumps(_doc(family=_DROP)), r"field 'family' is missing"),
    ("unknown-family", lambda: json.dumps(_doc(family="gcee")), r"field 'family': unknown loss family 'gcee'.*Valid: "),
    ("unknown-field", lambda: json.dumps(_doc(paramz={})), r"unknown field 'paramz'.*Did you mean 'params'"),
    ("params-not-object", lambda: json.dumps(_doc(params=[1.5, 0.2])), r"field 'params' must be a JSON object"),
    ("missing-param", lambda: json.dumps(_doc(params={"scale": 1.5})), r"field 'params'.*'shift' is missing"),
    ("unknown-param", lambda: json.dumps(_doc(params={"scale": 1.5, "shift": 0.2, "q": 1})),
     r"field 'params': unknown parameter 'q'"),
    ("out-of-range", lambda: json.dumps(_doc(params={"scale": 0.0, "shift": 0.2})),
     r"field 'params'.*'scale'=0.0 is outside its valid range \(0, 10\]"),
    ("nan-literal", lambda: json.dumps(_doc()).replace('"scale": 1.5', '"scale": NaN'), r"field 'params.scale' is nan"),
    ("infinity-literal", lambda: json.dumps(_doc()).replace('"shift": 0.2', '"shift": -Infinity'),
     r"field 'params.shift' is -inf"),
    ("huge-integer", lambda: json.dumps(_doc(params={"scale": 10**400, "shift": 0.2})),
     r"field 'params.scale' is 1000.*; write a finite number"),
    ("string-number", lambda: json.dumps(_doc(params={"scale": "1.5", "shift": 0.2})),
     r"field 'params.scale' must be a number; got str '1.5'"),
    ("bool-number", lambda: json.dumps(_doc(params={"scale": True, "shift": 0.2})),
     r"field 'params.scale' must be a number"),
    ("bad-name", lambda: json.dumps(_doc(name="my-loss")), r"field 'name'.*not a valid Python identifier"),
    ("normalisation-mismatch", lambda: json.dumps(_doc(normalisation="max_abs_grid")),
     r"field 'normalisation' is 'max_abs_grid' but .* uses 'none'"),
    ("provenance-not-object", lambda: json.dumps(_doc(provenance="run-7")),
     r"field 'provenance' must be a JSON object"),
    ("provenance-nan", lambda: json.dumps(_doc(provenance={"fitness": math.nan})),
     r"field 'provenance.fitness' is nan"),
]


@pytest.mark.parametrize("make_text,match", [c[1:] for c in _BAD_FILES], ids=[c[0] for c in _BAD_FILES])
def test_malformed_plugin_file_names_the_problem(
    scaled_family: Family, tmp_path: Path, make_text: Callable[[], str | bytes], match: str
) -> None:
    text = make_text()
    path = tmp_path / "loss.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=match) as info:
        load_loss(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_valid_base_document_loads(scaled_family: Family, tmp_path: Path) -> None:
    path = tmp_path / "loss.json"
    path.write_text(json.dumps(_doc()))
    assert load_loss(path).spec == LossSpec(TEST_FAMILY, {"scale": 1.5, "shift": 0.2})


def test_missing_path_and_directory_without_plugin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a file; pass a plug-in loss.json"):
        load_loss(tmp_path / "nope.json")
    with pytest.raises(ValueError, match=r"loss.json' is not a file"):
        load_loss(tmp_path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "my-loss"}, "not a valid Python identifier"),
        ({"name": "class"}, "not a valid Python identifier"),
        ({"name": "json"}, "would shadow the module 'json'"),
        ({"provenance": {"when": object()}}, "provenance is not JSON-serialisable"),
        ({"provenance": {"fitness": math.nan}}, "provenance is not JSON-serialisable"),
        ({"provenance": {1: "a"}}, "provenance key 1 is not a string"),
        ({"provenance": ["run"]}, "provenance must be a dict"),
    ],
    ids=["dash-name", "keyword-name", "stdlib-name", "object", "nan", "int-key", "list"],
)
def test_bad_export_arguments_write_nothing(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        export_plugin(LossSpec("ce"), tmp_path / "p", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_per_sample_tensor_params_cannot_be_exported(scaled_family: Family, tmp_path: Path) -> None:
    spec = LossSpec(TEST_FAMILY, {"scale": torch.full((4,), 0.5)})
    with pytest.raises(TypeError, match=r"parameter 'scale' is a tensor of shape \(4,\)"):
        export_plugin(spec, tmp_path / "p")
    out = export_plugin(LossSpec(TEST_FAMILY, {"scale": torch.tensor(0.5)}), tmp_path / "q")
    assert json.loads((out / "loss.json").read_text())["params"]["scale"] == 0.5


@pytest.mark.parametrize(
    "logits,targets,match",
    [
        (torch.randn(4, dtype=torch.float64), torch.zeros(4, dtype=torch.long), r"targets must have shape \(\)"),
        (torch.randn(4, 3, dtype=torch.float64), torch.full((4,), 3), r"targets must lie in \[0, 2\]"),
        (torch.randn(4, 3, dtype=torch.float64), torch.zeros(4), "class-probability targets must have the input"),
        (torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.bool), "integer class indices"),
    ],
    ids=["1d-logits-with-rows-of-targets", "target-out-of-range", "float-targets-of-index-shape", "bool-targets"],
)
def test_loaded_loss_rejects_bad_tensors(
    tmp_path: Path, logits: torch.Tensor, targets: torch.Tensor, match: str
) -> None:
    loaded = load_loss(export_plugin(LossSpec("ce"), tmp_path / "p"))
    with pytest.raises((ValueError, TypeError), match=match):
        loaded(logits, targets)


# --- export names that look like the module's own identifiers (issue 13, item 6) -------------------
def _import_plugin(out: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, out / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["PARAMS_", "FAMILY_", "NORMALISATION_", "family_loss", "Family_Loss", "loss_fn",
                                  "flatten_classes_", "F_", "nn_"])
def test_no_export_name_collides_with_the_module_identifiers(name: str, tmp_path: Path) -> None:
    spec = _random_spec("gce")
    out = export_plugin(spec, tmp_path / "p", name=name)
    module = _import_plugin(out, name)
    (class_name,) = module.__all__[:1]
    assert class_name == plugin_class_name(name, taken=set(vars(module)) - {class_name})
    assert module.PARAMS == dict(spec.resolved().params) and module.FAMILY == "gce"
    logits, targets = _inputs(seed=5)
    want = create_loss(spec)(logits, targets)
    assert torch.equal(getattr(module, class_name)()(logits, targets), want)
    assert torch.equal(module.loss_fn(logits, targets), want)


@pytest.mark.parametrize("name", ["adjusted_loss", "SNAPSHOTS_", "PARAM_NAMES", "FamilyLoss"])
def test_no_adjusted_export_name_collides_with_the_module_identifiers(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    adjuster = {"format": "evoloss-narl-adjuster", "format_version": 1, "family": "gce", "param_names": ["q"],
                "hidden": 3, "input": "logit_margin", "w1": rng.normal(size=(3, 1)).tolist(),
                "b1": rng.normal(size=3).tolist(), "w2": rng.normal(size=(1, 3)).tolist(), "b2": [0.2],
                "offsets": {"q": 1e-4}, "scales": {"q": 0.9999}}
    out = losses.export_adjuster_plugin(adjuster, "gce", tmp_path / "p", name=name)
    module = _import_plugin(out, name)
    class_name = module.__all__[0]
    assert class_name not in {"AdjustedLoss", "FamilyLoss", "SNAPSHOTS", "PARAM_NAMES"}
    logits, targets = _inputs(seed=6)
    assert torch.equal(getattr(module, class_name)()(logits, targets), load_loss(out)(logits, targets))


def test_plugin_class_name_steps_around_taken_names() -> None:
    assert plugin_class_name("evolved_loss") == "EvolvedLoss"
    assert plugin_class_name("PARAMS_", taken={"PARAMS"}) == "PluginPARAMS"
    assert plugin_class_name("family_loss", taken={"FamilyLoss", "PluginFamilyLoss"}) == "PluginPluginFamilyLoss"
