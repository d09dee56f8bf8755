"""Only complete checkpoints count: the marker decides, not the directory's existence."""
from __future__ import annotations

from launcher.checkpoints import (MARKER, all_checkpoints, checkpoint_step, complete_checkpoints,
                                  last_complete_checkpoint, mark_complete)


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
