"""launch-plot: PNGs from metrics.jsonl (loss raw + smoothed, eval_loss, the stage's metrics)."""
from __future__ import annotations

import json
import subprocess
import sys

from launcher.plot import file_name, plot_run, plotted_keys, series, smooth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "lo')  # torn


def train_rows(n):
    return [{"step": i, "epoch": i / n, "loss": 2.0 - i * 0.1, "lr": 1e-4} for i in range(1, n + 1)]


def test_series_has_one_point_per_row_that_logged_the_key():
    rows = train_rows(7) + [{"step": 7, "eval_loss": 1.5}, {"step": 8, "loss": float("nan")}]
    assert series(rows, "loss") == (list(range(1, 8)), [2.0 - i * 0.1 for i in range(1, 8)])
    assert series(rows, "eval_loss") == ([7], [1.5])
    assert series(rows, "rewards/margins") == ([], [])


def test_a_step_redone_by_a_resumed_attempt_counts_once_with_its_later_value():
    rows = train_rows(4) + [{"step": 3, "loss": 0.3}, {"step": 4, "loss": 0.4}, {"step": 5, "loss": 0.5}]
    assert series(rows, "loss") == ([1, 2, 3, 4, 5], [1.9, 1.8, 0.3, 0.4, 0.5])


def test_smoothing_keeps_the_number_of_points_and_the_first_value():
    values = [3.0, 1.0, 2.0, 0.5]
    s = smooth(values)
    assert len(s) == len(values) and s[0] == 3.0
    assert min(values) <= s[-1] <= max(values)


def test_stage_metrics_are_plotted_only_when_logged():
    rows = train_rows(3) + [{"step": 3, "rewards/margins": 0.2}]
    assert plotted_keys(rows, ("rewards/margins", "rewards/chosen")) == ["loss", "rewards/margins"]
    assert file_name("loss") == "training_loss.png" and file_name("rewards/margins") == "rewards_margins.png"


def test_plot_run_writes_valid_pngs_with_every_point(tmp_path):
    rows = train_rows(12) + [{"step": 12, "eval_loss": 1.1}]
    rows += [{"step": i, "rewards/margins": 0.1 * i} for i in range(1, 5)]
    write_metrics(tmp_path, rows)
    (tmp_path / "summary.json").write_text(json.dumps({"metrics": {"rewards/margins": {"first": 0.1, "last": 0.4}}}))
    written = plot_run(tmp_path)
    assert sorted(p.name for p in written) == ["eval_loss.png", "rewards_margins.png", "training_loss.png"]
    import matplotlib.image

    for p in written:
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert matplotlib.image.imread(p).shape[:2] == (480, 640)


def test_launch_plot_cli(tmp_path):
    write_metrics(tmp_path / "run", train_rows(4))
    r = subprocess.run([sys.executable, "-m", "launcher.plot", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("training_loss.png")
    assert (tmp_path / "run" / "training_loss.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "run" / "eval_loss.png").exists()
    r = subprocess.run([sys.executable, "-m", "launcher.plot", str(tmp_path / "nothing")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no metrics.jsonl" in r.stderr


def test_compose_validate_plan_do_not_import_the_plotting_module():
    code = ("import sys; from tests.support import compose, facts; from launcher.validate import validate; "
            "from launcher.plan import build_plan; cfg = compose('recipe=tiny_sft_lora', 'device=cpu'); "
            "f = facts(cfg); validate(cfg, f); build_plan(cfg, f, '/tmp/x'); "
            "print('launcher.plot' in sys.modules, 'matplotlib' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]
