"""The report assembler: protocol, tables, failures, cost, figures; compare and search runs; reproducible."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from evoloss.results.report import REPORT_NAME, build_report, read_run, run_kinds, write_report
from evoloss.results.schema import SCHEMA_VERSION
from evoloss.results.store import ParquetStore
from tests.results.report_rows import (
    TASK_LABELS,
    compare_generation_row,
    compare_rows,
    write_compare_run,
    write_search_run,
)


@pytest.fixture(scope="module")
def compare_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = write_compare_run(tmp_path_factory.mktemp("cmp") / "run")
    out, _ = write_report(run)
    return out, (out / REPORT_NAME).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The lines under a Markdown heading, up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#") and
                len(lines[i].split(" ")[0]) <= len(level)), len(lines))
    return "\n".join(lines[start:end])


def test_read_run_matches_the_store_and_detects_the_kind(tmp_path: Path) -> None:
    run = write_compare_run(tmp_path / "run")
    rows = read_run(run)
    store = ParquetStore(run)
    assert rows.evaluations.equals(store.read()) and rows.generations.equals(store.read_generations())
    assert run_kinds(rows) == ("compare",)
    assert run_kinds(read_run(write_search_run(tmp_path / "search"))) == ("search",)


def test_read_run_leaves_a_live_run_alone(tmp_path: Path) -> None:
    run = write_compare_run(tmp_path / "run")
    in_flight = run / "evaluations" / ".gen-000001.parquet.tmp-abcd"  # a coordinator's part being written
    in_flight.write_bytes(b"partial")
    read_run(run)
    assert in_flight.exists()


@pytest.mark.parametrize("make", ["missing", "file", "empty-dir", "empty-store"])
def test_missing_or_empty_run_dirs_raise_naming_the_path(tmp_path: Path, make: str) -> None:
    run = tmp_path / "run"
    if make == "file":
        run.write_text("x")
    elif make == "empty-dir":
        run.mkdir()
    elif make == "empty-store":
        ParquetStore(run)
    error = FileNotFoundError if make == "missing" else ValueError
    with pytest.raises(error, match=str(run)):
        write_report(run)
    assert not (run / "report").exists()


def test_protocol_is_stated_from_the_rows(compare_report: tuple[Path, str]) -> None:
    _, text = compare_report
    protocol = _section(text, "## Protocol")
    assert "- Run: `cmp-test`" in protocol
    assert "- Rows: 36 evaluations: 32 ok, 1 diverged, 3 failed" in protocol
    assert "`test_acc_last`" in protocol and "clean test accuracy after the last epoch" in protocol
    assert "metric_rule `last`" in protocol
    assert "- Noise: symmetric (convention `exact`): rate 0.4 (realised 0.400), rate 0.8 (realised 0.800)" in protocol
    assert "- Seeds: 0, 1, 2" in protocol
    assert "- Grid: digits/mlp2, mnist1d/cnn1d" in protocol
    assert f"- Versions: evoloss 0.1.0; torch 2.14.1; schema {SCHEMA_VERSION}" in protocol
    assert text.index("## Protocol") < text.index("## Accuracy")


def test_accuracy_tables_split_seen_and_held_out(compare_report: tuple[Path, str]) -> None:
    _, text = compare_report
    seen = _section(text, "### Seen tasks")
    held = _section(text, "### Held-out tasks")
    assert TASK_LABELS[0] in seen and TASK_LABELS[1] in seen and TASK_LABELS[2] not in seen
    assert TASK_LABELS[2] in held and TASK_LABELS[0] not in held
    # seen: T0 arl 1, gce 2, mwnet 3, ce 4; T1 arl 1, mwnet 2, gce 3, ce 4
    ranks = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in seen.splitlines() if line.startswith("| ")}
    assert ranks["ce"] == "4.00" and ranks["gce"] == "2.50" and ranks["mwnet"] == "2.50" and ranks["arl"] == "**1.00**"
    overall = _section(text, "### Average rank")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:-1]] for line in overall.splitlines()[2:] if line.startswith("| ")}
    assert rows["ce"] == ["4.00", "2.50", "3.50"] and rows["mwnet"] == ["2.50", "4.00", "3.00"]
    assert rows["arl"] == ["**1.00**", "**1.00**", "**1.00**"]


def test_failed_and_partial_cells_are_listed(compare_report: tuple[Path, str]) -> None:
    _, text = compare_report
    failures = _section(text, "## Failed and partial cells")
    assert "- `gce` on `digits/mlp2/symmetric0.4-exact`: 2/3 ok (1 diverged): loss became NaN at epoch 3" in failures
    assert ("- `mwnet` on `mnist1d/cnn1d/symmetric0.8-exact`: 0/3 ok (3 failed): "
            "RuntimeError: meta set is empty | check splits.meta_per_class") in failures
    assert "failed: RuntimeError: meta set is empty \\| check…" in _section(text, "### Held-out tasks")


def test_cost_table(compare_report: tuple[Path, str]) -> None:
    _, text = compare_report
    cost = _section(text, "## Cost per method")
    assert "| mwnet | meta-learned | 9 | 6 | 7.00 | 3.50 | 43.5 |" in cost
    assert "| ce | hand-designed | 9 | 9 | 2.00 | 1.00 | 18.0 |" in cost


def test_figures_are_written_and_linked(compare_report: tuple[Path, str]) -> None:
    out, text = compare_report
    linked = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert linked == ["loss_shapes.png", "learning_curves.png", "accuracy_vs_noise.png"]
    for name in linked:
        image = imread(out / name)[..., :3]
        assert image.std() > 0.05 and (image < 0.9).any(axis=-1).mean() > 0.01
    assert "mwnet: meta-learned, no fixed shape" in text
    assert sorted(p.name for p in out.iterdir()) == sorted([REPORT_NAME, *linked])


def test_same_rows_give_a_byte_identical_report(tmp_path: Path) -> None:
    first = write_compare_run(tmp_path / "a")
    shuffled = write_compare_run(tmp_path / "b", shuffle_seed=3)
    out_a, _ = write_report(first)
    out_b, _ = write_report(shuffled, tmp_path / "elsewhere" / "report")
    md = (out_a / REPORT_NAME).read_bytes()
    assert md == (out_b / REPORT_NAME).read_bytes()  # same rows in another order, another run dir and out dir
    assert str(tmp_path).encode() not in md


def test_metric_override_and_a_stale_figure_is_removed(tmp_path: Path) -> None:
    run = write_compare_run(tmp_path / "run")
    out, _ = write_report(run)
    (out / "accuracy_vs_noise.png").write_bytes(b"old")
    rows = [r for r in compare_rows() if r["noise_rate"] == 0.8]
    other = ParquetStore(tmp_path / "one-rate")
    other.append(0, rows, compare_generation_row(rows))
    out2, report = write_report(tmp_path / "one-rate", out, metric="test_acc_best")
    text = (out2 / REPORT_NAME).read_text()
    assert "`test_acc_best`" in text and "accuracy_vs_noise.png" not in text
    assert not (out / "accuracy_vs_noise.png").exists()
    assert "96.00 ± 1.00" not in text and "**65.00 ± 2.00**" in text  # arl on mnist1d, best-epoch test acc: 60 + 5
    assert report.kinds == ("compare",)


def test_search_report(tmp_path: Path) -> None:
    run = write_search_run(tmp_path / "run", generations=4, popsize=6, seed=0)
    out, report = write_report(run)
    text = (out / REPORT_NAME).read_text()
    gens = ParquetStore(run).read_generations()
    best = gens.loc[gens["best_fitness"].idxmax()]
    params = json.loads(best["best_params"])
    search = _section(text, "## Search")
    assert f"- Best: generation {best['generation']}, candidate {best['best_candidate']}, " \
           f"fitness {100 * best['best_fitness']:.2f} % (family `taylor`)" in search
    assert f"- Best parameters: theta2={params['theta2']:.4g}, theta3={params['theta3']:.4g}," in search  # natural order
    assert search.index("theta9=") < search.index("theta10=")
    table = [line for line in search.splitlines() if line.startswith("| 2 |")]
    g2 = gens.set_index("generation").loc[2]
    assert table == [f"| 2 | {100 * g2['best_fitness']:.2f} | {100 * g2['mean_fitness']:.2f} | "
                     f"{100 * g2['median_fitness']:.2f} | {g2['sigma']:.4g} | 12 | 0 | 6.00 | 2.00 |"]
    assert "- Candidates per generation: 6; generations 0–3; 48 evaluations, 1 not ok" in search
    assert "`val_acc_last`" in _section(text, "## Protocol")
    for name in ("search_progress.png", "best_loss_shape.png"):
        assert f"]({name})" in text
        assert imread(out / name)[..., :3].std() > 0.05
    assert report.kinds == ("search",) and "best fitness" in report.summary


def test_a_search_whose_every_candidate_failed_still_reports(tmp_path: Path) -> None:
    run = write_search_run(tmp_path / "run", generations=1, popsize=2)
    gens = ParquetStore(run).read_generations()
    assert not math.isnan(gens["best_fitness"].iloc[0])
    rows = read_run(run)
    rows.generations.loc[:, ["best_fitness", "mean_fitness", "median_fitness"]] = np.nan
    report = build_report(rows, tmp_path / "figs")
    assert "- Best: no candidate finished" in report.markdown


def test_a_run_with_compare_and_search_rows_gets_both_sections(tmp_path: Path) -> None:
    from tests.results.report_rows import search_rows

    store = ParquetStore(tmp_path / "run")
    rows = compare_rows()
    store.append(0, rows, compare_generation_row(rows))
    searched = [dict(r, run_id="cmp-test") for r in search_rows(1, 3, np.random.default_rng(1))]
    store.append(1, searched, dict(compare_generation_row(searched, generation=1), best_fitness=0.4,
                                   best_candidate=0, best_params=searched[0]["params"], sigma=0.3))
    out, report = write_report(tmp_path / "run")
    text = (out / REPORT_NAME).read_text()
    assert report.kinds == ("compare", "search") and "- Run: `cmp-test` (compare and search)" in text
    assert text.index("## Accuracy (%)") < text.index("## Search")
    assert "- Rows: 42 evaluations: 37 ok, 2 diverged, 3 failed; 2 generation rows" in text
    assert "- Best: generation 1, candidate 0, fitness 40.00 % (family `taylor`)" in text


def test_generation_rows_without_evaluations_are_a_search(tmp_path: Path) -> None:
    store = ParquetStore(tmp_path / "run")
    store.append(0, [], dict(compare_generation_row([]), best_fitness=0.5, best_candidate=2, sigma=0.4))
    rows = read_run(tmp_path / "run")
    assert run_kinds(rows) == ("search",)
    report = build_report(rows, tmp_path / "figs")
    assert "- Best: generation 0, candidate 2, fitness 50.00 % (family not recorded)" in report.markdown
    assert report.figures == ("search_progress.png",)
