"""Runs a Calamari 1 program (``calamari-train``, ``calamari-resume-training``) so that every HDF5 file it writes
is replaced whole or not at all.

Run by the engine environment's own Python (hsbcala is not installed there: the standard library and the
environment's own h5py only); the launcher puts it in front of the program (``Cala1.runner``)::

    python cala1_start.py /env/bin/calamari-train ARGS...

Why: Calamari 1.0.7 writes a checkpoint's weights with Keras' ``model.save(path + ".h5")``, which opens the file
with ``h5py.File(path, "w")``: truncated at once, filled, closed. ``best.ckpt.h5`` is rewritten in place at
every stage start and every improvement, and its JSON (written after it) stays the old one until then. A SIGTERM
(scancel, Ctrl-C, a time limit) or a SIGKILL during that second leaves a torn ``best.ckpt.h5`` beside a whole
JSON: the model directory then says "complete" and calamari-predict fails on it later ("bad object header
version number"). Here a file opened for writing is written under a hidden name beside the target and renamed
over it when closed (fsynced first), so an interrupted write loses that write and nothing else: the best model
stays the previous best, a new checkpoint is simply absent.

Not a hook in Calamari's code: h5py's ``File`` is the one place every Keras HDF5 write goes through, and Keras
looks it up as ``h5py.File`` at call time. Calamari 2 needs none of this: tfaip's checkpoints and export are
TensorFlow's, written to temporary names and renamed.
"""

import os
import runpy
import sys

TMP_SUFFIX = (
    ".hsbcala-tmp.h5"  # ".<target name>.hsbcala-tmp.h5" beside the target (".h5": Keras' format check)
)


def temporary_name(target):
    """The hidden name a write of ``target`` goes to first (one per target: a later write reuses it)."""
    head, tail = os.path.split(os.path.abspath(target))
    return os.path.join(head, f".{tail}{TMP_SUFFIX}")


def _fsync_dir(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install():
    """Make ``h5py.File(path, "w")`` write whole files: a subclass replaces ``h5py.File`` (isinstance holds)."""
    import h5py

    original = h5py.File
    if getattr(original, "_hsbcala_whole", False):
        return

    class WholeFile(original):
        _hsbcala_whole = True

        def __init__(self, name, mode="r", *args, **kwargs):
            self._hsbcala_target = None
            if mode == "w" and isinstance(name, (str, bytes, os.PathLike)):
                target = os.fsdecode(name)
                super().__init__(temporary_name(target), mode, *args, **kwargs)
                self._hsbcala_target = target
            else:
                super().__init__(name, mode, *args, **kwargs)

        def close(self):
            target, self._hsbcala_target = self._hsbcala_target, None
            if target is None:
                return super().close()
            tmp = self.filename
            super().close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            _fsync_dir(target)
            return None

    h5py.File = WholeFile


def _interpreter(script):
    """The interpreter a script's ``#!`` line names (None: none, or not a Python)."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1:
        from shutil import which

        words = [which(words[1]) or words[1]]
    return words[0] if "python" in os.path.basename(words[0]) else None


def main(argv):
    if not argv:
        sys.exit("usage: cala1_start.py PROGRAM ARGS...  (PROGRAM: a Calamari 1 console script)")
    script = argv[0]
    wanted = _interpreter(script)
    if wanted and os.path.abspath(wanted) != os.path.abspath(sys.executable):
        # version.env.kind=path: the program's own Python may not be the python first on PATH (not resolved:
        # two venvs' pythons are links to one interpreter, with different site-packages)
        os.execv(wanted, [wanted, os.path.abspath(__file__), *argv])
    install()
    sys.argv = list(argv)
    # as if the script were run itself: its own directory first on sys.path, not hsbcala/engines (whose module
    # names, process, text, base, must not shadow anything the engine imports)
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
