"""launch-ui in a real headless browser (Debian's chromium + chromedriver through selenium): compose the tiny
recipe, see a validation error, preview, start 2 CPU ranks, watch the curve gain points, stop (exit 75,
interrupted), resume to the end, and submit one to the local Slurm. A screenshot of each state is saved in
the test's tmp dir (printed)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("launch-ui's browser test needs Debian's chromium and chromium-driver (scripts/setup.sh installs "
                "them); not found on PATH", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

#: the checkpoint save of the tiny run waits this long (the worker's test hook), so it trains long enough to stop
SAVE_DELAY_S = "1.0"
LOCAL = {"train.max_steps": "80", "train.logging_steps": "2", "train.save_steps": "10", "gpus": "2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    home = tmp_path_factory.mktemp("ui")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.ui.app", "--port", str(port), "--output-root",
                             str(home / "outputs")], cwd=home, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "LAUNCHER_TEST_SAVE_DELAY_S": SAVE_DELAY_S})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"launch-ui did not serve {url}:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
    yield url, home
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(server):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.get(server[0])
    yield driver
    driver.quit()


class Page:
    def __init__(self, driver, shots: Path):
        self.d, self.shots = driver, shots
        shots.mkdir(exist_ok=True)

    def wait(self, what, timeout: float = 60, why: str = ""):
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.3).until(lambda d: what())
        except Exception:
            self.shot("timeout")
            raise AssertionError(f"waited {timeout} s for {why}; page: {self.text('body')[-3000:]}")

    def text(self, css: str) -> str:
        return self.d.find_element(By.CSS_SELECTOR, css).text

    def group(self, name: str, value: str):
        Select(self.d.find_element(By.CSS_SELECTOR, f'[data-group="{name}"]')).select_by_value(value)

    def field(self, key: str, value: str):
        e = self.d.find_element(By.CSS_SELECTOR, f'[data-key="{key}"]')
        if e.tag_name == "select":
            Select(e).select_by_value(value)
        else:  # typed keys, not clear(): the page validates on input events
            e.send_keys(Keys.CONTROL, "a")
            e.send_keys(Keys.BACKSPACE, value)

    def click(self, css: str):
        self.d.find_element(By.CSS_SELECTOR, css).click()

    def shot(self, name: str):
        self.d.save_screenshot(str(self.shots / f"{name}.png"))

    def points(self) -> int:
        return int(self.d.find_element(By.CSS_SELECTOR, "#curve").get_attribute("data-points") or 0)

    def status(self) -> str:
        return self.text("#run-status") if self.d.find_element(By.CSS_SELECTOR, "#run-view").is_displayed() else ""

    def ready(self) -> bool:
        return "no problems" in self.text("#messages")

    def start(self, statuses: tuple[str, ...], timeout: float = 120) -> str:
        """Click Start; the run id once the page shows the new run (not the one shown before) in a status."""
        before = self.text("#run-title") if self.status() else ""
        self.click("#start-btn")
        self.wait(lambda: self.status() in statuses and self.text("#run-title") != before, timeout=timeout,
                  why=f"the new run to be {' or '.join(statuses)}")
        return self.text("#run-title")

    def compose_tiny(self, **fields: str):
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, '[data-group="recipe"]'), why="the form")
        self.group("recipe", "tiny_sft_lora")
        self.field("device", "cpu")
        for k, v in fields.items():
            self.field(k, v)
        self.wait(self.ready, why="the tiny recipe to validate")


def test_compose_validate_preview_start_stop_resume(server, browser):
    url, home = server
    page = Page(browser, home / "screens")
    print(f"screenshots: {page.shots}")
    page.compose_tiny(**LOCAL)
    page.field("train.learning_rate", "-1")
    page.wait(lambda: "train.learning_rate=-1.0: must be > 0" in page.text("#messages"), why="the validate message")
    assert "bad" in browser.find_element(By.CSS_SELECTOR, '[data-field="train.learning_rate"]').get_attribute("class")
    page.shot("1-validation-error")
    page.field("train.learning_rate", "")
    page.wait(page.ready, why="the error to clear")

    page.click("#preview-btn")
    page.wait(lambda: "global batch 8" in page.text("#preview"), why="the dry run")
    assert "world size 2" in page.text("#preview") and "torch.distributed.run" in page.text("#preview")
    page.shot("2-preview")

    run_id = page.start(("running",))
    page.wait(lambda: page.points() >= 2, timeout=120, why="the first loss points")
    first = page.points()
    page.wait(lambda: page.points() > first, timeout=60, why="the curve to gain points")
    page.shot("3-running-curve")

    page.click("#stop-btn")
    page.wait(lambda: page.status() == "interrupted", timeout=120, why="the stopped run to be interrupted")
    stopped_at = page.points()
    launch_log = (home / "outputs" / ".launch-ui" / (run_id.replace("/", "__") + ".log")).read_text()
    assert "(exit 75)" in launch_log, launch_log[-2000:]
    page.shot("4-stopped")

    page.click("#resume-btn")
    page.wait(lambda: page.status() == "finished", timeout=150, why="the resumed run to finish")
    page.wait(lambda: page.points() >= 40, timeout=10, why="the whole curve")
    assert page.points() > stopped_at
    page.wait(lambda: "(exit 0)" in page.text("#log"), timeout=10, why="launch's last line in the log pane")
    launch_log = (home / "outputs" / ".launch-ui" / (run_id.replace("/", "__") + ".log")).read_text()
    assert "resume=true: resuming from" in launch_log and launch_log.rstrip().endswith("(exit 0)")
    assert "launch-chat " in browser.find_element(By.CSS_SELECTOR, "#commands input").get_attribute("value")
    browser.refresh()  # a reload re-reads the run and its whole curve
    page.wait(lambda: page.status() == "finished" and page.points() >= 40, timeout=20, why="the reloaded curve")
    page.click("#preview-btn")
    page.wait(lambda: "global batch 8" in page.text("#preview"), why="the dry run")
    page.shot("5-finished")  # docs/ui.png


def test_submit_to_slurm(server, browser, slurm_cluster):
    url, home = server
    page = Page(browser, home / "screens")
    page.compose_tiny(**{**LOCAL, "train.max_steps": "4", "gpus": "1"})
    page.group("cluster", "slurm")
    page.wait(page.ready, why="the Slurm config to validate")
    page.click("#preview-btn")
    page.wait(lambda: "#SBATCH" in page.text("#preview"), why="the sbatch script in the preview")
    page.shot("6-slurm-preview")
    run_id = page.start(("queued", "running", "finished"))
    run = home / "outputs" / run_id
    assert (run / "sbatch.sh").is_file() and (run / "slurm" / "job_ids").is_file()
    assert "job " in page.text("#run-detail") or page.status() == "finished"
    page.shot("7-slurm-submitted")
    page.wait(lambda: page.status() == "finished", timeout=180, why="the Slurm job to finish")
    page.shot("8-slurm-finished")
