"""``evoloss plot-loss``: a real PNG from plug-ins and plain specs; bad input is one line and exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.image import imread

from evoloss.losses.plugin import export_plugin
from evoloss.losses.registry import LossSpec
from evoloss.search.cli import main


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plot_loss_from_a_plugin_and_a_plain_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = export_plugin(LossSpec("ce"), tmp_path / "export", name="found_loss")
    plain = _write(tmp_path / "ce.json", json.dumps({"family": "ce", "params": {}}))
    out = tmp_path / "report" / "shapes.png"
    code = main(["plot-loss", str(plugin / "loss.json"), str(plain), "--out", str(out), "--classes", "4"])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (2 losses, C=4)"
    image = imread(out)
    assert image.ndim == 3 and image[..., :3].std() > 0.05


def test_repeated_labels_are_told_apart(tmp_path: Path) -> None:
    from evoloss.search.commands.plot_loss import labelled_specs

    a = _write(tmp_path / "a.json", json.dumps({"family": "ce"}))
    b = _write(tmp_path / "b.json", json.dumps({"family": "ce"}))
    assert [label for label, _ in labelled_specs([str(a), str(b)])] == ["ce", f"ce ({b})"]


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"family": "cee"}), "field 'family': unknown loss family 'cee'"),
        (json.dumps({"family": "ce", "params": {"q": 0.5}}), "field 'params': unknown parameter 'q'"),
        (json.dumps({"family": "ce", "colour": "red"}), "unknown field 'colour'"),
        (json.dumps({"format": "evoloss-loss", "format_version": 9, "name": "x", "family": "ce", "params": {},
                     "normalisation": "none"}), "field 'format_version' is 9"),
    ],
    ids=["not-json", "unknown-family", "unknown-param", "unknown-field", "future-plugin"],
)
def test_bad_spec_file_is_one_line_exit_2_and_no_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, match: str
) -> None:
    good = _write(tmp_path / "good.json", json.dumps({"family": "ce"}))
    bad = _write(tmp_path / "bad.json", content)
    out = tmp_path / "shapes.png"
    code = main(["plot-loss", str(good), str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and err.startswith("evoloss plot-loss: error: ") and match in err
    assert str(bad) in err


@pytest.mark.parametrize(
    "argv,match",
    [
        (["ce.json", "--out", "shapes.png", "--classes", "1"], "num_classes must be an integer >= 2; got 1"),
        (["ce.json", "--out", "FIG.jpg"], "must end in '.png'"),
        (["ce.json", "missing.json", "--out", "shapes.png"], "'missing.json' is not a file"),
    ],
    ids=["one-class", "not-png", "missing-file"],
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "ce.json", json.dumps({"family": "ce"}))
    code = main(["plot-loss", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ce.json"]


def test_missing_out_is_an_argparse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plot-loss", str(tmp_path / "ce.json")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "--out" in err
