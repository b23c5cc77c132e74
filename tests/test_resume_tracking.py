"""A resumed training continues its own MLflow run, or is refused: never split silently into a new one (issue 19,
item 2).

Quick: a real sqlite store and :class:`hsbcala.track.tracking.Tracker`, no engine: a run the store does not have (the
model directory was trained against another store) or has deleted gives a new run, said in one line. Slow: a real
``mlflow server`` on 127.0.0.1 behind a small HTTP proxy that answers 503 to the first N ``runs/get`` requests,
as a restarting server or its reverse proxy does, and a tiny real training interrupted by SIGTERM and launched
again through ``python train.py``: with N larger than all the retries the relaunch is refused (one line, exit 2,
no new run, the state as it was); with N just past MLflow's own retries it resumes the same run.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hsbcala.track import tracking
from tests.conftest import ROOT, compose_cfg
from tests.processes import MlflowServer, wait_until
from tests.test_train_integration import tiny

RUNS_GET = "/api/2.0/mlflow/runs/get"


def _cfg(tmp_path: Path, uri: str):
    return compose_cfg(
        [f"paths.root={tmp_path}", f"mlflow.tracking_uri={uri}", "mlflow.system_metrics=false"]
    )


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


# ---------------------------------------------------------------------------------------------- quick


def test_a_run_this_store_lacks_or_deleted_gives_a_new_run_and_says_so(tmp_path, capsys):
    """The model directory was trained against another store: a new run, said naming the old run and the
    store. That new run deleted in the UI: again a new run, said. (One test: each new sqlite store costs
    MLflow's migrations, seconds.)"""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    elsewhere = tracking.Tracker(
        _cfg(tmp_path, f"sqlite:///{tmp_path / 'other.db'}"), None, tags={}, params={}
    )
    elsewhere.end("KILLED")
    capsys.readouterr()

    here = tracking.Tracker(_cfg(tmp_path, uri), elsewhere.run_id, tags={}, params={})
    here.end("KILLED")
    err = capsys.readouterr().err
    assert not here.resumed and here.run_id != elsewhere.run_id
    line = next(x for x in err.splitlines() if elsewhere.run_id in x)
    assert "is not in" in line and uri in line and "new run" in line

    _client(uri).delete_run(here.run_id)
    again = tracking.Tracker(_cfg(tmp_path, uri), here.run_id, tags={}, params={})
    again.end("KILLED")
    assert not again.resumed and again.run_id != here.run_id
    assert (
        f"the MLflow run {here.run_id} named in this model directory was deleted" in capsys.readouterr().err
    )


# ------------------------------------------------------------------------------------------------ slow


class FlakyProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` that answers 503 (a plain-text body, as nginx does
    while its backend restarts) to the next ``fail`` requests of ``runs/get`` and forwards everything else;
    ``runs_get`` counts the ``runs/get`` requests it saw."""

    def __init__(self, upstream_port: int) -> None:
        self.fail = 0
        self.runs_get = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as MLflow's requests session expects

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                if self.path.split("?")[0] == RUNS_GET:
                    with proxy._lock:
                        proxy.runs_get += 1
                        refuse = proxy.fail > 0
                        proxy.fail -= refuse
                    if refuse:
                        msg = b"503 Service Unavailable\n"
                        self.send_response(503)
                        self.send_header("Content-Type", "text/plain")
                        self.send_header("Content-Length", str(len(msg)))
                        self.end_headers()
                        self.wfile.write(msg)
                        return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                skip = {"host", "transfer-encoding", "connection", "keep-alive", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in skip:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _env() -> dict[str, str]:
    # no back-off between retries, MLflow's (an int) nor hsbcala's (which scales with it): a fast test; MLflow's
    # retry count stays hsbcala's default (trackinfo.bound_http: 2), so 3 failed runs/get use up one attempt
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
    env.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    return env


def _train(overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )


@pytest.mark.slow
def test_a_503_on_resume_neither_splits_the_run_nor_loses_it(tmp_path, fraktur_books):
    server = MlflowServer(tmp_path / "server").start()
    proxy = FlakyProxy(server.port)
    try:
        train_books, val_books = fraktur_books
        overrides = tiny(tmp_path, train_books, val_books, "cala2", **{"mlflow.tracking_uri": proxy.uri})
        overrides = [o for o in overrides if not o.startswith("train.epochs=")] + ["train.epochs=3"]
        md = tmp_path / "model-cala2"
        state_file = md / "hsbcala-state.json"

        # an interrupted training: its state names its run, which ended KILLED
        first = _train(overrides)
        wait_until(
            lambda: any(md.glob("checkpoint/checkpoint_*/trainer_params.json")), first, what="a checkpoint"
        )
        time.sleep(1.0)  # the checkpoint's variables complete
        first.send_signal(signal.SIGTERM)
        err = first.communicate(timeout=300)[1]
        assert first.returncode == 130, err[-3000:]
        before = state_file.read_bytes()
        run_id = json.loads(before)["run_id"]
        client = _client(server.uri)
        exp_id = client.get_run(run_id).info.experiment_id
        assert client.get_run(run_id).info.status == "KILLED"

        # (b) the store answers 503 for longer than all retries: refused, nothing split, nothing rewritten
        proxy.fail, proxy.runs_get = 1000, 0
        t0 = time.monotonic()
        refused = _train(overrides)
        err = refused.communicate(timeout=300)[1]
        took = time.monotonic() - t0
        assert refused.returncode == 2, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        errors = [x for x in err.splitlines() if x.startswith("hsbcala: error:")]
        assert len(errors) == 1 and run_id in errors[0] and "did not answer" in errors[0], err[-3000:]
        assert proxy.uri in errors[0] and "503" in errors[0]
        assert err.count("asking again") == tracking.RESUME_ATTEMPTS - 1, err[-3000:]
        assert proxy.runs_get >= 3 * tracking.RESUME_ATTEMPTS  # MLflow's own 2 retries inside each attempt
        assert json.loads(state_file.read_bytes()) == json.loads(before)
        assert state_file.read_bytes() == before
        runs = client.search_runs([exp_id])
        assert [r.info.run_id for r in runs] == [run_id], "a new run was created"
        assert client.get_run(run_id).info.status == "KILLED"
        print(f"refused after {took:.1f} s and {proxy.runs_get} runs/get requests")

        # (a) 503 to the first three runs/get (one attempt with MLflow's own retries): the same run resumes
        proxy.fail, proxy.runs_get = 3, 0
        resumed = _train(overrides)
        err = resumed.communicate(timeout=600)[1]
        assert resumed.returncode == 0, err[-3000:]
        assert err.count("asking again") == 1, err[-3000:]
        state = json.loads(state_file.read_text())
        assert state["run_id"] == run_id and state["status"] == "finished"
        assert len(state["history"]) == 2
        assert [r.info.run_id for r in client.search_runs([exp_id])] == [run_id], "the run was split"
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run_id, "val_cer")]
        assert steps == sorted(steps) and len(steps) >= 2 and steps[-1] == 3  # one curve over both launches
    finally:
        proxy.close()
        server.stop()
