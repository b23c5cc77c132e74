"""Real processes the integration tests start, watch and stop: a training (``python train.py``) running in the
background, and an ``mlflow server``. One copy of each, so that the tests that kill, interrupt or cut off a
training all do it the same way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).with_name("mlflow")


def start_training(overrides: list[str], script: str = "train.py") -> subprocess.Popen:
    """``python train.py *overrides`` (or ``script``: evaluate.py) in the background; its stderr (hsbcala's
    lines) stays readable."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until(
    predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 600, what: str = ""
) -> None:
    """Poll ``predicate`` every 0.2 s while ``proc`` runs; fail with its stderr if it ends first, or on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"the process ended before {what or 'the condition'}: {proc.stderr.read()[-3000:]}"
            )
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or 'the condition'}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend and proxied artifacts under ``root``; restartable on
    the same port (the store and artifacts stay), so a test can take it away and bring it back."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> MlflowServer:
        log = open(self.root / "server.log", "a")  # noqa: SIM115 - the server process holds it
        self.proc = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.root / 'server.db'}",
                "--artifacts-destination",
                str(self.root / "art"),
                "--workers",
                "1",
            ],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers go with it
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError((self.root / "server.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mlflow server not healthy after {timeout:.0f} s")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
