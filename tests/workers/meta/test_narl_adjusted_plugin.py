"""NARL meta-test from an exported adjusted-loss plug-in (loss.json): the trainer takes the file, uses
its snapshots by stage exactly as `losses.AdjustedLoss` does, and runs with the plug-in's fixed parameters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evoloss import losses
from evoloss.losses import LossSpec
from tests.workers.meta.conftest import tiny_task, tiny_task_data
from evoloss.workers.meta.narl import NarlLoss, NarlTrainer, load_adjusters
from evoloss.workers.meta.narl_adjuster import Adjuster, adjuster_to_dict, logit_margin, output_ranges
from evoloss.workers.trainer import create_trainer


def snapshots_of(family: str, learned: tuple[str, ...], seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    """Three distinct adjusters (seeded PyTorch default init), as NARL exports them."""
    offsets, scales = output_ranges(family, learned)
    return [adjuster_to_dict(Adjuster(family, learned, offsets, scales, hidden=16, seed=seed)) for seed in seeds]


def _outcome(record: object) -> tuple:
    return (record.status, record.params, record.curve_val, record.test_acc_last, record.train_loss_last)


def test_trainer_meta_tests_from_the_plugin_file_like_from_the_snapshots(tmp_path: Path) -> None:
    snapshots = snapshots_of("gce", ("q",))
    out = losses.export_adjuster_plugin(snapshots, "gce", tmp_path / "plugin", provenance={"run": "meta"})
    task, data = tiny_task(seed=5, epochs=3), tiny_task_data(seed=5, n_meta=0)
    (from_dicts,) = create_trainer("narl-gce", adjuster=snapshots).fit(task, [], data=data)
    (from_file,) = create_trainer("narl-gce", adjuster=str(out / "loss.json")).fit(task, [], data=data)
    (from_dir,) = create_trainer("narl-gce", adjuster=out).fit(task, [], data=data)
    assert from_file.status == "ok", from_file.error
    assert from_file.extra["mode"] == "meta-test" and from_file.extra["meta_steps"] == 0
    for record in (from_file, from_dir):
        assert _outcome(record) == _outcome(from_dicts)
        assert record.extra["per_epoch"]["lambda_curve"] == from_dicts.extra["per_epoch"]["lambda_curve"]


def test_trainer_stage_rule_matches_the_plugin_module(tmp_path: Path) -> None:
    """NARL's snapshot for (step, planned steps) gives the same Λ as AdjustedLoss at progress = step / planned."""
    snapshots = snapshots_of("polysoft", ("lam", "d"))
    out = losses.export_adjuster_plugin(snapshots, "polysoft", tmp_path / "p")
    module = losses.load_loss(out, reduction="none")
    method = NarlLoss(LossSpec("polysoft"), ("lam", "d"), adjusters=load_adjusters(snapshots, "polysoft"))
    g = torch.Generator().manual_seed(0)
    logits, targets = 3 * torch.randn(10, 4, generator=g), torch.randint(0, 4, (10,), generator=g)
    planned = 11
    for step in range(planned):
        want = method.stage_adjuster(step, planned).hyperparameters(logit_margin(logits, targets))
        got = module.hyperparameters(logits, targets, progress=step / planned)
        for name in ("lam", "d"):
            torch.testing.assert_close(got[name], want[name].detach())


def test_plugin_fixed_parameters_reach_the_trainer(tmp_path: Path) -> None:
    out = losses.export_adjuster_plugin(snapshots_of("sce", ("alpha", "beta")), "sce", tmp_path / "p",
                                        fixed_params={"A": -4.0})
    trainer = create_trainer("narl-sl", adjuster=str(out / "loss.json"))
    assert trainer.default_spec() == LossSpec("sce", {"A": -4.0})
    assert trainer.resolve_specs([LossSpec("sce", {"alpha": 0.5})]) == [LossSpec("sce", {"A": -4.0, "alpha": 0.5})]
    assert trainer.make_method(trainer.default_spec()).fixed == {"A": -4.0}
    with pytest.raises(ValueError, match=r"spec sets A=-9.0 but the adjusted plug-in .* was exported with A=-4.0"):
        trainer.resolve_specs([LossSpec("sce", {"A": -9.0})])


def test_raw_adjuster_json_still_loads_and_a_plain_plugin_is_refused(tmp_path: Path) -> None:
    snapshots = snapshots_of("js", ("pi1",))
    raw = tmp_path / "adjuster.json"
    raw.write_text(json.dumps(snapshots))
    trainer = NarlTrainer(name="narl-js", family="js", learned=("pi1",), adjuster=str(raw))
    assert len(trainer.adjusters) == 3 and trainer.default_spec() == LossSpec("js")
    plain = losses.export_plugin(LossSpec("js"), tmp_path / "plain")
    with pytest.raises(ValueError, match=r"field 'adjuster' is missing; this is a plain loss plug-in"):
        create_trainer("narl-js", adjuster=str(plain / "loss.json"))
    gce = losses.export_adjuster_plugin(snapshots_of("gce", ("q",)), "gce", tmp_path / "gce")
    with pytest.raises(ValueError, match=r"adjuster snapshots are for family 'gce'; this trainer uses 'js'"):
        create_trainer("narl-js", adjuster=gce)
