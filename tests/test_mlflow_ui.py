"""The MLflow UI shows hsbcala's trainings in its model-training view (issue 22, item 1), seen in a real headless
Chromium against ``mlflow ui`` serving a store with a real tiny training: the experiment's runs table and the
run's ``val_cer`` chart, no GenAI panels (traces, token usage, "Detect issues", "Agent versions").

MLflow 3.17's UI picks its view from a global "workflow type" (URL ``?workflowType=``, else the browser's
localStorage, else GenAI), not from the experiment's ``mlflow.experimentKind`` tag: the links hsbcala prints
(:func:`hsbcala.track.info.ui_url`) carry the parameter. Each page is opened in a fresh browser profile, as a
person opening the link for the first time would."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from hsbcala.track.info import ui_url
from tests.conftest import missing
from tests.processes import free_port
from tests.test_train_integration import client, launch, tiny

pytestmark = pytest.mark.slow

MLFLOW = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "mlflow"
# what the GenAI view shows and the training view does not (seen in both views of MLflow 3.17.2; "Traces" is
# in both sidebars)
GENAI = ("Token Usage", "Detect Issues", "Agent versions", "Judges", "Prompts", "Training runs")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fraktur_books_module):
    """A store of its own with one training run. (Not the session's tiny models: by the time this module runs,
    the evaluation tests have logged eval/* metrics into their runs, whose sections MLflow's run page lists
    before the unprefixed model metrics, so val_cer is below the first screenful the test can see.)"""
    tmp = tmp_path_factory.mktemp("ui-store")
    train_books, val_books = fraktur_books_module
    proc = launch(tiny(tmp, train_books, val_books, "cala2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


@pytest.fixture(scope="module")
def fraktur_books_module():
    from tests.conftest import SHARED, need

    books = sorted(need(SHARED / "data" / "fraktur19-lines" / "ref_AS").iterdir())
    return books[:2], books[2:3]


@pytest.fixture(scope="module")
def ui(trained):
    """``mlflow ui`` on 127.0.0.1 over the training's store; yields its address."""
    port = free_port()
    log = open(trained / "ui.log", "w")  # noqa: SIM115 - the server process holds it
    proc = subprocess.Popen(
        [
            str(MLFLOW),
            "ui",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{trained / 'mlruns.db'}",
        ],
        cwd=trained,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    log.close()
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, (trained / "ui.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "mlflow ui did not answer /health"
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    yield address
    os.killpg(proc.pid, 15)
    proc.wait(30)


def browse(url: str, out: Path) -> str:
    """The page's DOM after the React app has rendered (virtual time: the app's fetches and timers run out),
    and a screenshot beside it, from a fresh profile."""
    chromium = shutil.which("chromium") or missing("Debian's chromium (apt-get install -y chromium)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,900", "--virtual-time-budget=20000",
        # paint frames while virtual time runs: the run page renders its chart cards only once they are seen to
        # be on screen (without it --dump-dom holds no chart at all, whatever the order)
        "--run-all-compositor-stages-before-draw",
    ]  # fmt: skip
    profile = out.with_suffix(".profile")
    dom = subprocess.run(
        [chromium, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    subprocess.run(
        [chromium, *flags, f"--user-data-dir={profile}-shot", f"--screenshot={out}", url],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out.with_suffix(".html").write_text(dom.stdout, encoding="utf-8")
    return dom.stdout


def test_the_printed_links_open_the_training_view(trained, ui, tmp_path):
    c = client(trained)
    (exp,) = [e for e in c.search_experiments() if e.name == "hsbcala-fraktur"]
    (run,) = c.search_runs([exp.experiment_id])
    page = browse(ui_url(ui, exp.experiment_id), tmp_path / "experiment.png")
    assert run.info.run_name in page and "Run Name" in page, "the runs table does not list the run"
    assert ">Models<" in page  # the training view's sidebar
    assert not [g for g in GENAI if g in page], [g for g in GENAI if g in page]
    link = ui_url(ui, exp.experiment_id, run.info.run_id).replace("?", "/model-metrics?")
    page = browse(link, tmp_path / "run.png")
    # the model's metrics first: MLflow sorts prefix sections (``job/``) before its unprefixed "Model metrics"
    # section, and only the first screenful is rendered; the job's metrics live on the System metrics tab
    assert "val_cer" in page and "Model metrics" in page
    assert "cpu_cores_used" not in page and "job (" not in page
    assert not [g for g in GENAI if g in page], [g for g in GENAI if g in page]
    assert (tmp_path / "run.png").stat().st_size > 10_000  # a real page was painted
    page = browse(link.replace("/model-metrics?", "/system-metrics?"), tmp_path / "system.png")
    assert "system/job" in page and "cpu_cores_used" in page, (
        "the job's CPU and memory are not on the System tab"
    )
