"""Calamari 1's HDF5 writes are whole or absent (hsbcala/engines/cala1_start.py), in the real engine env.

The fault: a stop during ``model.save(best.ckpt.h5)`` left a torn best model beside a whole JSON (CI stop 25:
calamari-predict "bad object header version number" after the team's path's SIGTERM). Each test kills a writer
in the middle of a write, once under cala1_start and once without it (the control: without it the killed write
went into the target itself, which a kill a moment earlier leaves torn).
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from hsbcala.engines import cala1, envs
from tests.conftest import ROOT, compose_cfg

OLD, NEW = 1.0, 2.0


@pytest.fixture(scope="module")
def python() -> str:
    env = envs.resolve(compose_cfg(["version=cala1", "version.env.device=cpu"]), ROOT)
    env.ensure()
    return env.program("python")


def _run(python: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([python, *argv], capture_output=True, text=True, timeout=300)


def _read(python: str, target: Path) -> str:
    """The value stored in ``target`` (read by the engine env's h5py), or the error opening it gives."""
    code = "import h5py, sys\ntry:\n  print(h5py.File(sys.argv[1], 'r')['v'][0])\nexcept Exception as e:\n  print(e)"
    return _run(python, ["-c", code, str(target)]).stdout.strip()


def _writer(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return script


def test_a_write_killed_midway_leaves_the_old_file(python, tmp_path):
    target = tmp_path / "best.ckpt.h5"
    writer = _writer(
        tmp_path,
        """
        import os, signal, sys
        import h5py
        import numpy as np
        f = h5py.File(sys.argv[1], "w")
        f["v"] = np.full(100_000, float(sys.argv[2]))
        if sys.argv[3] == "kill":
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # as a scancel's SIGKILL after the grace time, mid-write
        f.close()
        """,
    )
    start = str(cala1.START_SCRIPT)
    done = _run(python, [start, str(writer), str(target), str(OLD), "close"])
    assert done.returncode == 0, done.stderr
    assert _read(python, target) == str(OLD)
    assert not list(tmp_path.glob(".*.hsbcala-tmp.h5")), "a whole write leaves no temporary"

    killed = _run(python, [start, str(writer), str(target), str(NEW), "kill"])
    assert killed.returncode == -9
    assert _read(python, target) == str(OLD), "the target is the last whole write"

    # the control: without cala1_start the killed write went into the target itself
    bare = _run(python, [str(writer), str(target), str(NEW), "kill"])
    assert bare.returncode == -9
    assert _read(python, target) != str(OLD)


@pytest.mark.slow
def test_keras_save_goes_through_it(python, tmp_path):
    """Calamari 1 saves with Keras' model.save(path.h5): a stop just before the rename keeps the old model."""
    target = tmp_path / "best.ckpt.h5"
    writer = _writer(
        tmp_path,
        """
        import os, signal, sys
        import tensorflow as tf
        model = tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1, kernel_initializer="ones")])
        model.save(sys.argv[1])
        model.layers[0].kernel.assign([[2.0]])
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # stopped when the new file is written
        model.save(sys.argv[1])
        """,
    )
    killed = _run(python, [str(cala1.START_SCRIPT), str(writer), str(target)])
    assert killed.returncode == -9, killed.stderr[-2000:]
    code = "import h5py, sys\nf = h5py.File(sys.argv[1], 'r')\nf.visititems(lambda n, o: print(n, o[()]) if 'kernel' in n else None)"
    kernel = _run(python, ["-c", code, str(target)]).stdout
    assert "[[1.]]" in kernel, kernel  # the first save, whole
    assert (tmp_path / ".best.ckpt.h5.hsbcala-tmp.h5").is_file(), (
        "Keras wrote through cala1_start's temporary"
    )
