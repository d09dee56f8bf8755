"""launch-ui's Flask app through its test client: the token when exposed, the live validate messages, the preview
(the CLI's own dry run), an invalid dataset_info.json, the metrics cursor, a start that fails, recipe files."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from launcher import PROJECT_ROOT
from launcher.ui.app import COOKIE, HEADER, create_app, is_loopback
from tests.support import run_launch

TINY = ["recipe=tiny_sft_lora", "device=cpu", "gpus=2"]


@pytest.fixture
def client(tmp_path):
    return create_app(tmp_path / "outputs").test_client()


def post(client, path: str, **body):
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.get_json()


def test_an_exposed_page_needs_the_token_once_then_its_cookie(tmp_path):
    client = create_app(tmp_path, token="s3cret").test_client()
    assert client.get("/").status_code == 403
    assert client.get("/api/runs").status_code == 403
    assert client.get("/api/runs?token=wrong").status_code == 403
    assert client.post("/api/start", json={"args": TINY}).status_code == 403
    r = client.get("/?token=s3cret")
    assert r.status_code == 200 and "launch-ui" in r.text
    assert client.get_cookie(COOKIE).value == "s3cret"
    assert client.get("/api/runs").status_code == 200  # the cookie from now on
    other = create_app(tmp_path, token="s3cret").test_client()
    assert other.get("/api/runs", headers={HEADER: "s3cret"}).status_code == 200
    assert other.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_the_page_and_its_assets_use_relative_urls_only(client):
    html = client.get("/").text
    assert 'src="static/app.js"' in html and 'href="static/style.css"' in html
    js = client.get("/static/app.js").text
    assert "http" not in js.replace("HTTP ", "") and 'fetch("/' not in js and "api(\"/" not in js
    assert "api/check" in js and "api/metrics?run=" in js


def test_the_form_comes_from_the_schema_and_conf(client):
    form = client.get("/api/form").get_json()
    assert "tiny_sft_lora" in form["groups"]["recipe"] and form["groups"]["cluster"] == ["local", "slurm"]
    fields = {f["key"]: f for s in form["sections"] for f in s["fields"]}
    lr = fields["train.learning_rate"]
    assert lr["kind"] == "number" and "> 0" in lr["allowed"] and "1e-5" in lr["allowed"]
    assert fields["max_restarts"]["help"].startswith("after a rank dies")
    assert fields["device"]["choices"] == ["cpu", "cuda"]
    assert "cosine" in fields["train.lr_scheduler_type"]["choices"]


def test_a_bad_value_is_the_validate_message_and_the_form_shows_composed_values(client):
    res = post(client, "/api/check", args=[*TINY, "train.learning_rate=-1"])
    assert res["compose_error"] is None
    errors = [p for p in res["problems"] if p["error"]]
    assert [p["key"] for p in errors] == ["train.learning_rate"]
    assert errors[0]["text"].startswith("error: train.learning_rate=-1.0: must be > 0")
    assert res["values"]["train.per_device_train_batch_size"] == 4 and res["values"]["device"] == "cpu"
    assert "alpaca_demo" in res["datasets"]["names"] and res["datasets"]["error"] is None
    good = post(client, "/api/check", args=TINY)
    assert not [p for p in good["problems"] if p["error"]]
    wrong_group = post(client, "/api/check", args=["recipe=no_such_recipe"])
    assert "Could not find 'recipe/no_such_recipe'" in wrong_group["compose_error"]
    unknown_key = post(client, "/api/check", args=["train.lerning_rate=1"])
    assert "train.lerning_rate" in unknown_key["compose_error"]


def test_an_invalid_dataset_info_is_the_message_not_an_empty_list(client, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text('{\n  "mine": {"file_name": "x.json"},\n}\n')
    res = post(client, "/api/check", args=[*TINY, f"data.dataset_dir={data}", "data.dataset=mine"])
    assert "dataset_info.json: line 3" in res["datasets"]["error"]
    assert any("dataset_info.json: line 3" in p["text"] and p["error"] for p in res["problems"])


def test_the_preview_is_the_cli_dry_run(client, tmp_path):
    args = [*TINY, f"output_dir={tmp_path / 'run'}", f"output_root={tmp_path / 'outputs'}"]
    res = post(client, "/api/preview", args=args)
    cli = run_launch(*res["args"], "dry_run=true")
    assert cli.returncode == 0 and res["rc"] == 0, cli.stderr
    assert res["stdout"] == cli.stdout
    assert "world size 2" in res["stdout"] and "global batch 8" in res["stdout"]
    slurm = post(client, "/api/preview", args=[*args, "cluster=slurm", "cluster.partition=debug"])
    assert "#SBATCH --partition=debug" in slurm["stdout"] and "sbatch.sh" in slurm["stdout"]
    bad = post(client, "/api/preview", args=[*args, "train.max_steps=0"])
    assert bad["rc"] == 2 and "error: train.max_steps=0" in bad["stderr"] and not (tmp_path / "run").exists()


def test_metrics_are_read_by_cursor_complete_lines_only(client, tmp_path):
    run = tmp_path / "outputs" / "r" / "1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r"}))
    rows = [json.dumps({"step": s, "loss": 2.0 / s, "lr": 0.1}) + "\n" for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text(rows[0] + rows[1] + rows[2][:10])  # the last line is being written
    first = client.get("/api/metrics?run=r/1&offset=0").get_json()
    assert [r["step"] for r in first["rows"]] == [1, 2] and first["rows"][0] == {"step": 1, "loss": 2.0}
    assert first["offset"] == len(rows[0] + rows[1])
    assert client.get(f"/api/metrics?run=r/1&offset={first['offset']}").get_json()["rows"] == []
    (run / "metrics.jsonl").write_text("".join(rows) + json.dumps({"step": 3, "eval_loss": 0.5}) + "\n")
    more = client.get(f"/api/metrics?run=r/1&offset={first['offset']}").get_json()
    assert more["rows"] == [{"step": 3, "loss": 2.0 / 3}, {"step": 3, "eval_loss": 0.5}] and not more["reset"]
    (run / "metrics.jsonl").write_text(rows[0])  # the run dir started over: read from the start
    again = client.get(f"/api/metrics?run=r/1&offset={more['offset']}").get_json()
    assert again["reset"] and [r["step"] for r in again["rows"]] == [1]
    assert client.get("/api/metrics?run=../../etc&offset=0").status_code == 404
    listed = client.get("/api/runs").get_json()["runs"]
    assert [r["id"] for r in listed] == ["r/1"] and listed[0]["commands"]["chat"].startswith("launch-chat ")


def test_a_start_that_fails_shows_launchs_own_message(client, tmp_path):
    bad = post(client, "/api/start", args=[*TINY, "train.max_steps=0"])
    assert not bad["ok"] and "error: train.max_steps=0" in bad["error"]
    assert not (tmp_path / "outputs").exists()  # nothing started, nothing written
    from launcher.ui import launches

    # past the page's own check: the detached `launch` itself refuses, and its message comes back
    run = tmp_path / "outputs" / "x"
    res = launches.start([*TINY, "train.lerning_rate=1", f"output_dir={run}"], run, tmp_path / "x.log", tmp_path)
    assert not res["ok"] and "launch exited 2" in res["error"] and "train.lerning_rate" in res["error"]
    assert "train.lerning_rate" in (tmp_path / "x.log").read_text()


def test_stop_of_a_run_nobody_runs_says_so(client, tmp_path):
    run = tmp_path / "outputs" / "r" / "1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r"}))
    res = post(client, "/api/stop", run="r/1")
    assert not res["ok"] and "nothing to stop" in res["error"]


def test_a_saved_recipe_is_one_launch_composes(client):
    name = "ui_test_saved_recipe"
    path = PROJECT_ROOT / "recipes" / f"{name}.yaml"
    try:
        res = post(client, "/api/recipe", name=name, args=[*TINY, "adapter=full", "train.learning_rate=3e-4",
                                                          "adapter.lora_target=q_proj,k_proj"])
        assert res["ok"], res
        text = path.read_text()
        assert text.startswith("# @package _global_") and f"launch recipe={name}" in text
        again = post(client, "/api/check", args=[f"recipe={name}"])
        assert again["compose_error"] is None
        v = again["values"]
        assert v["train.learning_rate"] == 3e-4 and v["device"] == "cpu" and v["gpus"] == 2 and v["name"] == name
        assert v["adapter.lora_target"] == "q_proj,k_proj" and v["train.per_device_train_batch_size"] == 4
        assert "adapter: full" in text.replace("override /", "")
        refused = post(client, "/api/recipe", name=name, args=TINY)
        assert not refused["ok"] and "exists" in refused["error"]
        assert not post(client, "/api/recipe", name="../evil", args=TINY)["ok"]
    finally:
        path.unlink(missing_ok=True)


def test_launch_ui_on_another_address_prints_its_token_and_refuses_requests_without_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "launcher.ui.app", "--host", "0.0.0.0", "--port", str(port),
                             "--output-root", str(tmp_path)], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f":{port}/?token=" in line, line
        token = line.rsplit("?token=", 1)[1].strip()
        assert f"access token {token}" in proc.stderr.readline()
        url = f"http://127.0.0.1:{port}/api/runs"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                pytest.fail("served without the token")
            except urllib.error.HTTPError as e:
                assert e.code == 403
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "launch-ui did not listen"
                time.sleep(0.2)
        with urllib.request.urlopen(urllib.request.Request(url, headers={HEADER: token}), timeout=5) as r:
            assert json.loads(r.read())["runs"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_behind_a_reverse_proxy_under_a_path_prefix_every_url_resolves(tmp_path):
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    app = create_app(tmp_path)
    proxied = Client(DispatcherMiddleware(Response("not here", 404), {"/lab/ui": app.wsgi_app}))
    assert proxied.get("/lab/ui/").status_code == 200
    for url in ("static/app.js", "static/style.css", "api/runs", "api/form"):  # as the page asks, relative
        assert proxied.get(f"/lab/ui/{url}").status_code == 200, url


def test_resume_is_the_runs_own_overrides_with_resume_true(tmp_path):
    from launcher.ui.launches import log_path, resume_args

    run = tmp_path / "outputs" / "r" / "1"
    run.mkdir(parents=True)
    (run / "overrides.yaml").write_text(yaml.safe_dump(["recipe=tiny_sft_lora", "gpus=2", f"output_dir={run}",
                                                        "resume=false"]))
    assert resume_args(run) == ["recipe=tiny_sft_lora", "gpus=2", "resume=true", f"output_dir={run}"]
    assert log_path(tmp_path / "outputs", run) == tmp_path / "outputs" / ".launch-ui" / "r__1.log"
