"""TaskGrid modes, the seeded per-generation subset, and fitness from evaluation rows."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from evoloss.search.grid import TaskGrid, fitness_from_rows, metric_column
from evoloss.workers.task import Budget, NoiseSpec, Task

SYM80 = NoiseSpec(kind="symmetric", rate=0.8, convention="exact")
ASYM40 = NoiseSpec(kind="asymmetric", rate=0.4, convention="pairflip")


def test_ar_grid_is_the_product_in_order() -> None:
    grid = TaskGrid(datasets=("digits",), archs=("mlp2", "mlp3", "cnn4"), noises=(SYM80, ASYM40), seeds=(0, 1),
                    mode="ar", budget=Budget(epochs=3))
    tasks = grid.tasks()
    assert len(tasks) == len(grid) == 3 * 2 * 2
    assert all(isinstance(t, Task) and t.dataset == "digits" and t.budget.epochs == 3 for t in tasks)
    assert [(t.arch, t.noise.kind, t.seed) for t in tasks[:5]] == [
        ("mlp2", "symmetric", 0), ("mlp2", "symmetric", 1), ("mlp2", "asymmetric", 0), ("mlp2", "asymmetric", 1),
        ("mlp3", "symmetric", 0),
    ]
    assert len({t.key() for t in tasks}) == len(tasks)


def test_dr_and_ardr() -> None:
    dr = TaskGrid(datasets=("digits", "mnist1d"), archs=("mlp2",), mode="dr")
    assert [t.dataset for t in dr.tasks()] == ["digits", "mnist1d"]
    ardr = TaskGrid(datasets=("digits", "mnist1d"), archs=("mlp2", "cnn1d"), mode="ardr")
    assert {(t.arch, t.dataset) for t in ardr.tasks()} == {
        ("mlp2", "digits"), ("mlp2", "mnist1d"), ("cnn1d", "digits"), ("cnn1d", "mnist1d")}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(datasets=("digits", "mnist1d"), archs=("mlp2",), mode="ar"), "'ar'.*one dataset"),
        (dict(datasets=("digits",), archs=("mlp2", "mlp3"), mode="dr"), "'dr'.*one architecture"),
        (dict(datasets=("digits",), archs=("mlp2",), mode="arl"), "not one of"),
        (dict(datasets=(), archs=("mlp2",)), "datasets must be a non-empty"),
        (dict(datasets=("digits", "digits"), archs=("mlp2",)), "twice"),
        (dict(datasets=("digits",), archs=("mlp2",), seeds=(0, 0)), "distinct"),
        (dict(datasets=("digits",), archs=("mlp2",), seeds=(-1,)), "non-negative"),
        (dict(datasets=("digits",), archs=("mlp2",), subset_size=2), r"\[1, 1\]"),
        (dict(datasets=("digits",), archs=("mlp2",), metric_rule="final"), "metric_rule"),
    ],
)
def test_bad_grids(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TaskGrid(**kwargs)


def test_subset_is_seeded_per_generation_and_recorded() -> None:
    grid = TaskGrid(datasets=("digits", "mnist1d"), archs=("mlp2", "mlp3", "cnn1d"), seeds=(0, 1), subset_size=4,
                    subset_seed=11)
    full_keys = [t.key() for t in grid.tasks()]
    subsets = [grid.subset_keys(g) for g in range(6)]
    for keys in subsets:
        assert len(keys) == 4 and len(set(keys)) == 4 and set(keys) <= set(full_keys)
        assert keys == sorted(keys, key=full_keys.index)  # grid order kept
    assert len({tuple(k) for k in subsets}) > 1  # a fresh subset each generation
    again = TaskGrid(datasets=("digits", "mnist1d"), archs=("mlp2", "mlp3", "cnn1d"), seeds=(0, 1), subset_size=4,
                     subset_seed=11)
    assert [again.subset_keys(g) for g in range(6)] == subsets  # pure function of (seed, generation)
    other = TaskGrid(datasets=("digits", "mnist1d"), archs=("mlp2", "mlp3", "cnn1d"), seeds=(0, 1), subset_size=4,
                     subset_seed=12)
    assert [other.subset_keys(g) for g in range(6)] != subsets
    assert grid.tasks_for_generation(0) == [t for t in grid.tasks() if t.key() in subsets[0]]
    assert TaskGrid(datasets=("digits",), archs=("mlp2",)).tasks_for_generation(3) == TaskGrid(
        datasets=("digits",), archs=("mlp2",)).tasks()


def row(candidate: int, status: str = "ok", last: float = 0.5, best: float = 0.6) -> dict:
    return {"candidate": candidate, "status": status, "val_acc_last": last, "val_acc_best": best}


def test_fitness_mean_over_tasks_with_the_failure_rules() -> None:
    rows = [
        row(0, last=0.2), row(0, last=0.4), row(0, last=0.9, status="ok"),
        row(1, status="failed", last=math.nan), row(1, status="timeout", last=math.nan),  # all lost -> NaN
        row(2, last=0.6), row(2, status="diverged", last=math.nan),  # diverged, nothing recorded -> 0.0
        row(3, last=0.7), row(3, status="timeout", last=math.nan),  # left out -> mean of the rest
        row(4, status="diverged", last=0.3), row(4, last=0.5),  # diverged with a record -> counts
    ]
    fit = fitness_from_rows(rows, "last", candidates=range(6))
    assert fit[0] == pytest.approx((0.2 + 0.4 + 0.9) / 3)
    assert math.isnan(fit[1]) and math.isnan(fit[5])  # 5: no row at all
    assert fit[2] == pytest.approx(0.3) and fit[3] == pytest.approx(0.7) and fit[4] == pytest.approx(0.4)
    assert list(fit) == [0, 1, 2, 3, 4, 5]
    best = fitness_from_rows(rows, "best")
    assert best[0] == pytest.approx(0.6) and set(best) == {0, 1, 2, 3, 4}


def test_fitness_accepts_a_dataframe_and_rejects_bad_rows() -> None:
    df = pd.DataFrame([row(0, last=0.25), row(1, last=0.75), row(0, last=0.75)])
    assert fitness_from_rows(df, "last") == {0: 0.5, 1: 0.75}
    assert metric_column("best") == "val_acc_best"
    with pytest.raises(ValueError, match="lacks"):
        fitness_from_rows([{"candidate": 0, "status": "ok"}], "last")
    with pytest.raises(ValueError, match="status"):
        fitness_from_rows([row(0, status="crashed")], "last")
    with pytest.raises(TypeError, match="val_acc_last"):
        fitness_from_rows([row(0, last="0.5")], "last")
    with pytest.raises(ValueError, match="metric_rule"):
        fitness_from_rows([row(0)], "median")


VEC = "synthetic:n=200,c=3,d=6"  # vectors [6]: every MLP and cnn1d (as a sequence) fit, cnn4 does not


def test_incompatible_pairs_come_from_the_registries() -> None:
    from evoloss.search.grid import incompatible_pairs

    bad = incompatible_pairs(("digits", VEC), ("mlp2", "cnn1d", "cnn4"))
    assert [(d, a) for d, a, _ in bad] == [("digits", "cnn1d"), (VEC, "cnn4")]
    assert "sequences" in bad[0][2] and "images" in bad[1][2]


def test_left_out_pairs_leave_the_product_and_are_said_in_one_line() -> None:
    from evoloss.search.grid import left_out_line

    grid = TaskGrid(datasets=("digits", VEC), archs=("mlp2", "cnn1d"), seeds=(0, 1), left_out=(("digits", "cnn1d"),))
    assert len(grid) == len(grid.tasks()) == 3 * 2
    assert ("digits", "cnn1d") not in {(t.dataset, t.arch) for t in grid.tasks()}
    line = left_out_line(grid.left_out)
    assert line == "grid: left out 1 dataset x architecture pair(s) that cannot work: cnn1d on digits\n"
    assert left_out_line(()) == ""
    with pytest.raises(ValueError, match="outside the grid"):
        TaskGrid(datasets=("digits",), archs=("mlp2",), left_out=(("digits", "cnn4"),))
    with pytest.raises(ValueError, match="leaves no"):
        TaskGrid(datasets=("digits",), archs=("cnn1d",), mode="ar", left_out=(("digits", "cnn1d"),))


def test_config_refuses_a_pair_that_cannot_work_or_leaves_it_out() -> None:
    from evoloss.search.config import load_config
    from evoloss.search.config_fields import ConfigError
    from evoloss.search.grid import grid_from_config

    over = {"grid.datasets": ["digits", VEC], "grid.archs": ["mlp2", "cnn1d"], "grid.mode": "ardr",
            "grid.noise": [{"type": "symmetric", "rate": 0.4}], "grid.seeds": [0]}
    with pytest.raises(ConfigError) as info:
        load_config(overrides=over)
    assert info.value.key == "grid.archs" and "'cnn1d' cannot take dataset 'digits'" in str(info.value)
    assert f"mlp2 on digits, mlp2 on {VEC}, cnn1d on {VEC}" in str(info.value)
    config = load_config(overrides={**over, "grid.incompatible": "leave-out"})
    assert grid_from_config(config).left_out == (("digits", "cnn1d"),) and len(grid_from_config(config)) == 3
    with pytest.raises(ConfigError, match="exceeds the 3 tasks left"):
        load_config(overrides={**over, "grid.incompatible": "leave-out", "grid.subset_size": 4})


def test_grid_exclude_leaves_pairs_that_could_work_out_of_the_product() -> None:
    from evoloss.search.config import load_config
    from evoloss.search.config_fields import ConfigError
    from evoloss.search.grid import grid_from_config, left_out_line

    over = {"grid.datasets": ["digits", VEC], "grid.archs": ["mlp2", "mlp4", "cnn1d"], "grid.mode": "ardr",
            "grid.noise": [{"type": "symmetric", "rate": 0.4}], "grid.seeds": [0, 1],
            "grid.incompatible": "leave-out", "grid.exclude": [{"dataset": VEC, "arch": "mlp4"}]}
    grid = grid_from_config(load_config(overrides=over))
    assert set(grid.left_out) == {(VEC, "mlp4"), ("digits", "cnn1d")}
    pairs = {(t.dataset, t.arch) for t in grid.tasks()}
    assert pairs == {("digits", "mlp2"), ("digits", "mlp4"), (VEC, "mlp2"), (VEC, "cnn1d")} and len(grid) == 8
    line = left_out_line(grid.left_out, [(VEC, "mlp4")])
    assert line == (f"grid: left out 1 dataset x architecture pair(s) excluded by grid.exclude: mlp4 on {VEC}; "
                    "1 dataset x architecture pair(s) that cannot work: cnn1d on digits\n")
    # an excluded pair that cannot work is not refused (it is left out either way)
    refuse = {**over, "grid.incompatible": "refuse", "grid.exclude": [{"dataset": "digits", "arch": "cnn1d"}]}
    assert set(grid_from_config(load_config(overrides=refuse)).left_out) == {("digits", "cnn1d")}
    with pytest.raises(ConfigError) as info:
        load_config(overrides={**over, "grid.exclude": [{"dataset": "mnist1d", "arch": "mlp4"}]})
    assert info.value.key == "grid.exclude[0].dataset" and "digits" in info.value.fix
    with pytest.raises(ConfigError) as info:
        load_config(overrides={**over, "grid.exclude": [{"dataset": VEC, "arch": "mlp3"}]})
    assert info.value.key == "grid.exclude[0].arch"
    with pytest.raises(ConfigError, match="twice"):
        load_config(overrides={**over, "grid.exclude": [{"dataset": VEC, "arch": "mlp4"}] * 2})
    with pytest.raises(ConfigError, match="exceeds the 8 tasks left after 1 pair"):
        load_config(overrides={**over, "grid.subset_size": 9})
    with pytest.raises(ConfigError) as info:
        load_config(overrides={**over, "grid.exclude": [{"dataset": VEC, "archx": "mlp4"}]})
    assert "archx" in str(info.value)


def test_a_stratified_subset_gives_every_architecture_its_share() -> None:
    grid = TaskGrid(datasets=("digits", VEC), archs=("mlp2", "mlp3", "mlp4"), seeds=(0, 1, 2), subset_size=7,
                    subset_seed=3, stratify="arch", left_out=((VEC, "mlp4"),))
    assert grid.arch_task_counts() == {"mlp2": 6, "mlp3": 6, "mlp4": 3}
    extras = set()
    for generation in range(12):
        tasks = grid.tasks_for_generation(generation)
        counts = {a: sum(t.arch == a for t in tasks) for a in grid.archs}
        assert sorted(counts.values()) == [2, 2, 3] and len({t.key() for t in tasks}) == 7
        extras.add(max(counts, key=counts.get))
        order = [t.key() for t in grid.tasks()]
        assert [t.key() for t in tasks] == sorted((t.key() for t in tasks), key=order.index)  # grid order
        again = TaskGrid(datasets=("digits", VEC), archs=("mlp2", "mlp3", "mlp4"), seeds=(0, 1, 2), subset_size=7,
                         subset_seed=3, stratify="arch", left_out=((VEC, "mlp4"),))
        assert grid.subset_keys(generation) == again.subset_keys(generation)  # a pure function: resumes agree
    assert extras == {"mlp2", "mlp3", "mlp4"}  # the remainder goes to each architecture in turn of the draws
    plain = TaskGrid(datasets=("digits", VEC), archs=("mlp2", "mlp3", "mlp4"), seeds=(0, 1, 2), subset_size=7,
                     subset_seed=3, left_out=((VEC, "mlp4"),))
    assert any(not any(t.arch == "mlp4" for t in plain.tasks_for_generation(g)) for g in range(12))
    with pytest.raises(ValueError, match="'mlp4' has 3"):
        TaskGrid(datasets=("digits", VEC), archs=("mlp2", "mlp4"), seeds=(0, 1, 2), subset_size=8, stratify="arch",
                 left_out=((VEC, "mlp4"),))
    with pytest.raises(ValueError, match="stratify"):
        TaskGrid(datasets=("digits",), archs=("mlp2",), stratify="dataset")


def test_config_checks_a_stratified_subset_against_each_architecture() -> None:
    from evoloss.search.config import load_config
    from evoloss.search.config_fields import ConfigError
    from evoloss.search.grid import grid_from_config

    over = {"grid.datasets": ["digits", VEC], "grid.archs": ["mlp2", "mlp4"], "grid.mode": "ardr",
            "grid.seeds": [0, 1], "grid.exclude": [{"dataset": VEC, "arch": "mlp4"}], "grid.stratify": "arch"}
    grid = grid_from_config(load_config(overrides={**over, "grid.subset_size": 4}))
    assert grid.stratify == "arch" and all(sum(t.arch == "mlp4" for t in grid.tasks_for_generation(g)) == 2
                                           for g in range(5))
    with pytest.raises(ConfigError) as info:
        load_config(overrides={**over, "grid.subset_size": 5})
    assert info.value.key == "grid.subset_size" and "'mlp4' has 2" in str(info.value) and "at most 4" in info.value.fix
    with pytest.raises(ConfigError, match="one of none, arch|none.*arch"):
        load_config(overrides={**over, "grid.stratify": "noise"})
