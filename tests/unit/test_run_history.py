"""summary.json describes the whole run: every attempt, the first attempt's first loss, tokens/s over all
attempts' training time (pure: attempts.jsonl events and metrics.jsonl rows in)."""
from __future__ import annotations

from launcher.worker.history import attempts, whole_run

T0 = 1_000_000.0


def begin(t, restart=0, step=0, resumed_from=None):
    return {"event": "train_begin", "time": T0 + t, "restart": restart, "slurm_restart": 0, "host": "h0",
            "world_size": 2, "resumed_from": resumed_from, "step": step}


def end(t, step, outcome="finished"):
    return {"event": "train_end", "time": T0 + t, "step": step, "tokens": 100 * step, "outcome": outcome}


def exit_(t, restart, rc=1, reason="rank failed", node=0):
    return {"event": "exit", "time": T0 + t, "node": node, "restart": restart, "exit_code": rc, "reason": reason,
            "failed_rank": 1, "failed_host": "h1", "restarting": True, "resume_step": 4}


def row(t, step, loss):
    return {"step": step, "loss": loss, "time": T0 + t}


def test_a_killed_attempt_ends_at_its_last_metrics_row_and_a_restart_counts_its_own_time():
    events = [{"event": "launch", "time": T0 - 5}, begin(0), exit_(25, 0, node=0), exit_(26, 0, node=1),
              begin(30, restart=1, step=4, resumed_from="/r/checkpoints/checkpoint-4"), end(50, 10)]
    rows = [row(5, 2, 3.0), row(10, 4, 2.5), row(20, 6, 2.0),  # attempt 0, killed after step 6
            row(35, 6, 2.1), row(45, 8, 1.5), row(49, 10, 1.2)]
    out = whole_run(events, rows, trained_tokens=1000)
    first, second = out["attempts"]
    assert (first["start_step"], first["end_step"], first["train_time_s"]) == (0, 6, 20.0)
    assert first["outcome"] == "rank failed" and [e["node"] for e in first["exits"]] == [0, 1]
    assert (second["restart"], second["resumed_from"], second["start_step"]) == (1, "/r/checkpoints/checkpoint-4", 4)
    assert (second["end_step"], second["train_time_s"], second["outcome"]) == (10, 20.0, "finished")
    assert out["first_loss"] == 3.0 and out["final_loss"] == 1.2  # the first attempt's, not the resumed one's
    assert out["train_time_s"] == 40.0 and out["tokens_per_s"] == 25.0  # 1000 tokens / (20 s + 20 s)


def test_an_interrupted_run_then_a_resumed_launch():
    events = [{"event": "launch", "time": T0 - 1}, begin(0), end(10, 5, "interrupted"),
              exit_(11, 0, rc=75, reason="signal"),
              {"event": "launch", "time": T0 + 100}, begin(101, step=5, resumed_from="c5"), end(111, 10)]
    rows = [row(1, 1, 4.0), row(9, 5, 3.0), row(105, 6, 2.0), row(110, 10, 1.0)]
    out = whole_run(events, rows, trained_tokens=400)
    assert [a["outcome"] for a in out["attempts"]] == ["interrupted", "finished"]
    assert out["attempts"][0]["exits"][0]["exit_code"] == 75
    assert out["train_time_s"] == 20.0 and out["tokens_per_s"] == 20.0


def test_a_launch_that_died_before_training_is_an_attempt_too():
    events = [{"event": "launch", "time": T0}, begin(1), end(5, 3),
              {"event": "launch", "time": T0 + 50}, exit_(55, 0, reason="rank failed"),
              {"event": "launch", "time": T0 + 60}, begin(61, step=3, resumed_from="c3"), end(70, 6)]
    out = attempts(events, [])
    assert [a["outcome"] for a in out] == ["finished", "rank failed", "finished"]
    assert out[1]["start_step"] is None and out[1]["train_time_s"] == 0.0


def test_no_events_no_attempts():
    out = whole_run([], [row(1, 1, 2.0)], trained_tokens=None)
    assert out["attempts"] == [] and out["first_loss"] == 2.0 and out["tokens_per_s"] is None
