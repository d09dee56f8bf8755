"""`launch-ui [--host H] [--port P] [--output-root DIR]`: the web page's routes, its access token, main().

Every URL the page uses is relative, so it works behind a reverse proxy under a path prefix. The page polls JSON
with cursors (metrics.jsonl by byte offset), so a long run's curve has no connection to lose and a reload
re-reads it. Bound to 127.0.0.1 by default; on any other address a token printed at start is required
(?token=... once, then a cookie; or the X-Launch-UI-Token header).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Optional

from flask import Flask, abort, jsonify, request, send_from_directory

from launcher import jobs
from launcher.backends.slurm import SlurmError
from launcher.ui import checks, forms, launches, recipes, runview

STATIC = Path(__file__).parent / "static"
COOKIE = "launch_ui_token"
HEADER = "X-Launch-UI-Token"


def create_app(output_root: Path, token: Optional[str] = None, cwd: Optional[Path] = None,
               recipes_dir: Path = recipes.RECIPES_DIR) -> Flask:
    """token: required on every request when set. cwd: where `launch` runs (the server's directory)."""
    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # the form's groups and sections keep their order
    output_root = output_root.expanduser().resolve()
    cwd = cwd or Path.cwd()

    @app.before_request
    def require_token():
        if token is None:
            return
        auth = request.headers.get("Authorization", "")
        given = (request.args.get("token") or request.headers.get(HEADER) or request.cookies.get(COOKIE)
                 or (auth[7:] if auth.startswith("Bearer ") else None))
        if not given or not secrets.compare_digest(given, token):
            abort(403, description="launch-ui: this page needs the access token printed when launch-ui started "
                                   "(open the URL with ?token=...)")

    @app.after_request
    def remember_token(response):
        if token is not None and request.args.get("token") == token:
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    def args_of(body: dict) -> list[str]:
        """The page's overrides, with the server's output root unless one was typed."""
        args = [str(a) for a in body.get("args") or [] if str(a).strip()]
        if not any(a.partition("=")[0] == "output_root" for a in args):
            args = [f"output_root={output_root}", *args]
        return args

    def run_dir() -> Path:
        run_id = request.args.get("run") or (request.get_json(silent=True) or {}).get("run") or ""
        try:
            return runview.resolve_run(output_root, run_id)
        except runview.RunNotFound as e:
            abort(404, description=str(e))

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str):
        return send_from_directory(STATIC, name)

    @app.get("/api/form")
    def form():
        return jsonify({**forms.form(), "output_root": str(output_root), "recipes_dir": str(recipes_dir)})

    @app.post("/api/check")
    def check():
        args = args_of(request.get_json(force=True))
        return jsonify({**checks.check(args, forms.field_keys()), "args": args})

    @app.post("/api/preview")
    def preview():
        args = args_of(request.get_json(force=True))
        return jsonify({**checks.preview(args), "args": args})

    @app.post("/api/start")
    def start():
        args = args_of(request.get_json(force=True))
        found = checks.check(args, ())
        if found["compose_error"] or any(p["error"] for p in found["problems"]):
            return jsonify({"ok": False, "error": found["compose_error"] or "\n".join(
                p["text"] for p in found["problems"] if p["error"]), "args": args})
        args, run = launches.with_output_dir(args, found["output_root"], found["name"])
        return jsonify({**launches.start(args, run, launches.log_path(output_root, run), cwd), "args": args})

    @app.get("/api/runs")
    def runs():
        launches.reap()
        return jsonify({"runs": runview.list_runs(output_root) if output_root.is_dir() else [],
                        "output_root": str(output_root)})

    @app.get("/api/metrics")
    def metrics():
        return jsonify(runview.metrics_since(run_dir(), int(request.args.get("offset", 0))))

    @app.get("/api/logs")
    def logs():
        run = run_dir()
        return jsonify({"logs": runview.log_tails(run, launches.log_path(output_root, run))})

    @app.post("/api/stop")
    def stop():
        try:
            return jsonify({"ok": True, "message": jobs.stop_run(str(run_dir()))})
        except (jobs.NotRunning, SlurmError, OSError) as e:
            return jsonify({"ok": False, "error": str(e)})

    @app.post("/api/resume")
    def resume():
        run = run_dir()
        args = args_of({"args": launches.resume_args(run)})
        return jsonify({**launches.start(args, run, launches.log_path(output_root, run), cwd), "args": args})

    @app.post("/api/recipe")
    def save_recipe():
        body: dict[str, Any] = request.get_json(force=True)
        try:
            path = recipes.save(str(body.get("name") or ""), body.get("args") or [], bool(body.get("overwrite")),
                                recipes_dir)
        except (recipes.RecipeError, OSError) as e:
            return jsonify({"ok": False, "error": str(e)})
        found = checks.check([f"recipe={path.stem}"], ())
        if found["compose_error"]:  # a recipe `launch` cannot compose is not left behind
            path.unlink()
            return jsonify({"ok": False, "error": f"{path}: {found['compose_error']}"})
        return jsonify({"ok": True, "path": str(path), "name": path.stem})

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="launch-ui", description="A web page to compose, validate, preview, start "
                                "and watch `launch` runs.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only); any other address requires the access token printed at start")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--output-root", default="outputs", help="where runs are written and listed (default outputs)")
    args = p.parse_args(argv)
    token = None if is_loopback(args.host) else (os.environ.get("LAUNCH_UI_TOKEN") or secrets.token_urlsafe(24))
    app = create_app(Path(args.output_root), token)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"launch-ui: runs in {Path(args.output_root).resolve()}; open {url}", file=sys.stderr, flush=True)
    if token:
        print(f"launch-ui: access token {token} (needed on {args.host}: open the URL above once, or send the "
              f"{HEADER} header)", file=sys.stderr, flush=True)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
