"""Only complete checkpoints count: the marker decides, not the directory's existence."""
from __future__ import annotations

from launcher.checkpoints import (MARKER, all_checkpoints, checkpoint_step, complete_checkpoints,
                                  last_complete_checkpoint, mark_complete, to_rotate)


def make(root, step, complete):
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if complete:
        mark_complete(d, {"step": step})
    return d


def test_the_newest_complete_checkpoint_wins_over_a_newer_torn_one(tmp_path):
    make(tmp_path, 10, True)
    newest_complete = make(tmp_path, 20, True)
    make(tmp_path, 30, False)  # killed mid-save
    (tmp_path / "checkpoint-x").mkdir()
    assert [checkpoint_step(p) for p in all_checkpoints(tmp_path)] == [10, 20, 30]
    assert [checkpoint_step(p) for p in complete_checkpoints(tmp_path)] == [10, 20]
    assert last_complete_checkpoint(tmp_path) == newest_complete


def test_steps_sort_numerically_and_a_missing_dir_has_none(tmp_path):
    make(tmp_path, 9, True)
    make(tmp_path, 100, True)
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-100"
    assert last_complete_checkpoint(tmp_path / "nope") is None


def test_the_marker_is_written_whole(tmp_path):
    d = make(tmp_path, 5, True)
    assert (d / MARKER).read_text().strip().startswith("{")
    assert [p.name for p in d.iterdir()] == [MARKER]  # no temporary file left behind


def steps(paths):
    return [checkpoint_step(p) for p in paths]


def test_rotation_keeps_the_newest_complete_ones_and_drops_torn_older_ones(tmp_path):
    for step, complete in ((10, True), (20, False), (30, True), (40, True), (50, False)):
        make(tmp_path, step, complete)
    # 20 died mid-save (older than the newest complete 40: garbage); 50 may still be written: kept
    assert steps(to_rotate(tmp_path, keep=2)) == [10, 20]
    assert steps(to_rotate(tmp_path, keep=1)) == [10, 20, 30]
    assert steps(to_rotate(tmp_path, keep=None)) == [20]


def test_rotation_never_deletes_the_best_checkpoint(tmp_path):
    for step in (10, 20, 30, 40):
        make(tmp_path, step, True)
    assert steps(to_rotate(tmp_path, keep=1, best=tmp_path / "checkpoint-20")) == [10, 30]
    assert steps(to_rotate(tmp_path, keep=2, best=str(tmp_path / "checkpoint-40"))) == [10, 20]


def test_rotation_never_deletes_the_newest_complete_one(tmp_path):
    make(tmp_path, 10, True)
    make(tmp_path, 20, False)  # a save in progress (or killed): it must not push out 10
    assert to_rotate(tmp_path, keep=1) == []
    assert to_rotate(tmp_path, keep=0) == []
    assert to_rotate(tmp_path / "nope", keep=1) == []


def test_export_and_chat_refuse_a_torn_checkpoint(tmp_path):
    import pytest

    from launcher.inference import RunError, open_run

    (tmp_path / "config.yaml").write_text("{}\n")
    make(tmp_path / "checkpoints", 10, True)
    make(tmp_path / "checkpoints", 20, False)
    with pytest.raises(RunError, match=r"checkpoint-20 is incomplete \(its save did not finish on every rank\); "
                                       r"complete checkpoints of this run: 10$"):
        open_run(str(tmp_path), "20")
