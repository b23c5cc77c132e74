"""hsbcala.pretrained: list, download (real HTTP on 127.0.0.1), check and install pretrained models.

Real archives (tar.gz, zip) of real-shaped ensembles: the members' JSON comes from the builders of
tests/test_models.py (Calamari 2.3 trainer params, Calamari 1 protobuf JSON), the weights are small random
files in the real layout (``<i>.ckpt/saved_model.pb`` + ``variables/`` for Calamari 2, ``<i>.ckpt.h5`` for
Calamari 1). They are served by ``http.server`` in a thread; the registry is a temporary copy of the
repository's (``--registry`` or ``HSBCALA_PRETRAINED_REGISTRY``), whose file is never written by a test.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from hsbcala import engines, pretrained
from hsbcala.core.errors import DataError
from tests.conftest import ROOT
from tests.test_models import CHARSET, DEEP3, V1_DEFAULT_LAYERS, v1_checkpoint, v2_trainer_params

REPO_REGISTRY = ROOT / "hsbcala" / "pretrained_registry.json"
REPO_REGISTRY_BYTES = REPO_REGISTRY.read_bytes()  # compared at the end: no test may write the repo's file
TEAM = {"deep3_fraktur19": "cala2", "deep3_lsh4": "cala2", "fraktur_19th_century": "cala1"}
TEAM["antiqua_historical"] = "cala1"
UNREACHABLE = "http://127.0.0.1:9/nowhere"  # the discard port: nothing listens, a download fails at once


# ------------------------------------------------------------------------------------- archives and server


def model_folder(root: Path, name: str, calamari: str, members: int = 2) -> Path:
    """An ensemble folder shaped like the release's: ``<i>.ckpt.json`` + weights, for ``members`` members."""
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(members):
        if calamari == "cala2":
            model = v2_trainer_params(DEEP3, CHARSET, "deep3", version=6)
            ckpt = folder / f"{i}.ckpt"
            (ckpt / "variables").mkdir(parents=True)
            (ckpt / "saved_model.pb").write_bytes(os.urandom(300))
            (ckpt / "variables" / "variables.index").write_bytes(os.urandom(60))
            (ckpt / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(4000))
        else:
            model = v1_checkpoint(V1_DEFAULT_LAYERS, CHARSET, dropout_rate=0.5)
            (folder / f"{i}.ckpt.h5").write_bytes(os.urandom(4000))
        (folder / f"{i}.ckpt.json").write_text(json.dumps(model, indent=2), encoding="utf-8")
    return folder


def tar_gz(folder: Path, out: Path, arcname: str | None = None, extra: list[tarfile.TarInfo] = ()) -> bytes:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder, arcname=arcname or folder.name)
        for info in extra:
            tf.addfile(info, io.BytesIO(b"evil\n") if info.isreg() else None)
    return out.read_bytes()


def zip_of(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> bytes:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, str(p.relative_to(folder.parent)))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out.read_bytes()


def evil_member(name: str = "../evil", link_to: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if link_to is None:
        info.size = 5
    else:
        info.type, info.linkname = tarfile.SYMTYPE, link_to
    return info


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /<mode>/<file>: ok (all of it), half (half of it, then the connection closes), dribble (half, then
    a byte every 50 ms until the test ends); an unknown file is a 404."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(self.path)
        mode, _, name = self.path.lstrip("/").partition("/")
        body = srv.files.get(name)
        if body is None or mode not in ("ok", "half", "dribble"):
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "ok":
            self.wfile.write(body)
            return
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        if mode == "dribble":
            with contextlib.suppress(OSError):
                for i in range(half, len(body) - 1):
                    if srv.stop.wait(0.05):
                        break
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.stop = {}, [], threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_port}"
    # shutdown() waits for serve_forever's next poll: 0.5 s by default, at every test's teardown
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def registry(tmp_path) -> Path:
    """A copy of the repository's registry for ensembles of 2 members, archive size and sha256 unknown, every
    URL unreachable (a test points the ones it uses at its server)."""
    data = json.loads(REPO_REGISTRY_BYTES)
    for m in data["models"].values():
        m.update(members=2, size=None, sha256=None, url=f"{UNREACHABLE}/{Path(m['url']).name}")
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def set_entry(registry: Path, name: str, **fields) -> None:
    data = json.loads(registry.read_text(encoding="utf-8"))
    data["models"][name].update(fields)
    registry.write_text(json.dumps(data, indent=2), encoding="utf-8")


def entry(registry: Path, name: str) -> dict:
    return json.loads(registry.read_text(encoding="utf-8"))["models"][name]


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one error line (asserts it is one line, the last, and that no traceback came before it)."""
        lines = self.err.strip().splitlines()
        errors = [line for line in lines if line.startswith("hsbcala: error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], self.err
        assert "Traceback" not in self.err, self.err
        return errors[0]


def cli(*args: str | Path) -> Run:
    """``python -m hsbcala.pretrained …`` in this process (the same exit code and output)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            pretrained.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------------------------------------ registry


def test_registry_holds_the_team_models_of_the_script_configs():
    models = pretrained.load_registry(REPO_REGISTRY)
    assert {n: e.calamari for n, e in models.items()} == TEAM
    for script in ("fraktur", "antiqua"):  # conf/script/*.yaml: script.pretrained.<version>
        for version, name in OmegaConf.load(ROOT / "conf" / "script" / f"{script}.yaml").pretrained.items():
            assert models[name].calamari == version
    for e in models.values():
        repo = "calamari_models_experimental" if e.calamari == "cala2" else "calamari_models"
        assert e.url.startswith(f"https://github.com/Calamari-OCR/{repo}/releases/download/")
        assert e.archive_name.startswith(e.name) and e.path_in_archive == e.name
        assert e.members == 5 and e.size and e.network and e.model_version in (2, 6)


# ------------------------------------------------------------------------------------------- over HTTP


def test_get_over_http_records_the_checksum_then_verifies_it(tmp_path, server, registry):
    archive = tar_gz(model_folder(tmp_path / "src", "deep3_fraktur19", "cala2"), tmp_path / "a.tar.gz")
    server.files["deep3_fraktur19.tar.gz"] = archive
    set_entry(registry, "deep3_fraktur19", url=f"{server.base}/ok/deep3_fraktur19.tar.gz")
    target = tmp_path / "pretrained"

    run = cli("get", "deep3_fraktur19", "--dir", target, "--registry", registry)
    assert run.code == 0, run.err
    assert entries(target) == ["deep3_fraktur19"]
    model = target / "deep3_fraktur19"
    assert (model / "1.ckpt" / "variables" / "variables.index").is_file()
    assert pretrained.check_model(model, pretrained.load_registry(registry)["deep3_fraktur19"])
    recorded = entry(registry, "deep3_fraktur19")
    assert recorded["sha256"] == hashlib.sha256(archive).hexdigest() and recorded["size"] == len(archive)
    assert "recorded the archive's sha256" in run.err and str(registry) in run.err

    mirror = f"{server.base}/ok"  # --from a mirror's base URL: <URL>/<the release archive's file name>
    again = cli(
        "get", "deep3_fraktur19", "--dir", tmp_path / "elsewhere", "--registry", registry, "--from", mirror
    )
    assert again.code == 0, again.err
    assert server.requests[-1] == "/ok/deep3_fraktur19.tar.gz"
    assert "archive verified" in again.err and "recorded" not in again.err
    assert entry(registry, "deep3_fraktur19") == recorded

    asked = len(server.requests)
    present = cli("get", "deep3_fraktur19", "--dir", target, "--registry", registry)
    assert present.code == 0 and "already present" in present.err and len(server.requests) == asked
    forced = cli("get", "deep3_fraktur19", "--dir", target, "--registry", registry, "--force")
    assert forced.code == 0, forced.err
    assert len(server.requests) == asked + 1 and entries(target) == ["deep3_fraktur19"]


@pytest.mark.parametrize("wrong", ["sha256", "size"])
def test_checksum_or_size_mismatch_installs_nothing(tmp_path, server, registry, wrong):
    archive = tar_gz(model_folder(tmp_path / "src", "deep3_lsh4", "cala2"), tmp_path / "a.tar.gz")
    server.files["deep3_lsh4.tar.gz"] = archive
    bad = {"sha256": "0" * 64, "size": len(archive)} if wrong == "sha256" else {"size": len(archive) + 1}
    set_entry(registry, "deep3_lsh4", url=f"{server.base}/ok/deep3_lsh4.tar.gz", **bad)
    target = tmp_path / "pretrained"
    run = cli("get", "deep3_lsh4", "--dir", target, "--registry", registry)
    assert run.code == 2
    assert "deep3_lsh4" in run.error and wrong.replace("size", "bytes") in run.error
    assert "nothing was installed" in run.error
    assert entries(target) == [] and entry(registry, "deep3_lsh4")["sha256"] == bad.get("sha256")


def test_http_404_is_one_line(tmp_path, server, registry):
    set_entry(registry, "deep3_lsh4", url=f"{server.base}/ok/deep3_lsh4.tar.gz")  # not served
    run = cli("get", "deep3_lsh4", "--dir", tmp_path / "pretrained", "--registry", registry)
    assert run.code == 2 and "HTTP 404" in run.error and f"{server.base}/ok/deep3_lsh4.tar.gz" in run.error
    assert entries(tmp_path / "pretrained") == []


def test_connection_dropped_half_way_leaves_nothing(tmp_path, server, registry):
    archive = tar_gz(model_folder(tmp_path / "src", "deep3_fraktur19", "cala2"), tmp_path / "a.tar.gz")
    server.files["deep3_fraktur19.tar.gz"] = archive
    set_entry(registry, "deep3_fraktur19", url=f"{server.base}/half/deep3_fraktur19.tar.gz")
    target = tmp_path / "pretrained"
    target.mkdir()
    run = cli("get", "deep3_fraktur19", "--dir", target, "--registry", registry)
    assert run.code == 2, run.err
    assert f"broke off after {len(archive) // 2:,} of {len(archive):,} bytes" in run.error
    assert entries(target) == [] and entry(registry, "deep3_fraktur19")["sha256"] is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_download_leaves_nothing(tmp_path, server, registry, signum):
    """The real process: Ctrl-C (or SIGTERM) in the middle of a slow download, after progress lines."""
    archive = tar_gz(model_folder(tmp_path / "src", "deep3_fraktur19", "cala2"), tmp_path / "a.tar.gz")
    server.files["deep3_fraktur19.tar.gz"] = archive
    set_entry(registry, "deep3_fraktur19", url=f"{server.base}/dribble/deep3_fraktur19.tar.gz")
    target = tmp_path / "pretrained"
    env = {**os.environ, "HSBCALA_PROGRESS_SECONDS": "0.2", "HSBCALA_PRETRAINED_REGISTRY": str(registry)}
    cmd = [sys.executable, "-m", "hsbcala.pretrained", "get", "deep3_fraktur19", "--dir", str(target)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not list(target.glob(".tmp-deep3_fraktur19-*/deep3_fraktur19.tar.gz")):
        assert time.monotonic() < deadline and proc.poll() is None, "the download did not start"
        time.sleep(0.05)
    time.sleep(1.0)  # some progress lines
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    run = Run(proc.returncode, "", err)
    assert run.code == 130, err
    assert (
        f"interrupted by {signal.Signals(signum).name}" in run.error and "nothing was installed" in run.error
    )
    assert "MB/s" in err  # progress lines came while it downloaded
    assert entries(target) == []


# ---------------------------------------------------------------------------------------- archive checks


@pytest.mark.parametrize("kind", ["tar ../evil", "zip ../evil", "tar symlink", "zip absolute"])
def test_unsafe_archive_member_is_refused(tmp_path, server, registry, kind):
    folder = model_folder(tmp_path / "src", "deep3_fraktur19", "cala2")
    out = tmp_path / "evil" / "deep3_fraktur19.tar.gz"
    out.parent.mkdir()
    if kind == "tar ../evil":
        archive, member = tar_gz(folder, out, extra=[evil_member("../evil")]), "../evil"
    elif kind == "tar symlink":
        extra = [evil_member("deep3_fraktur19/passwd", link_to="/etc/passwd")]
        archive, member = tar_gz(folder, out, extra=extra), "deep3_fraktur19/passwd"
    else:
        member = "../evil" if kind == "zip ../evil" else "/tmp/evil"
        archive = zip_of(folder, out.with_suffix(".zip"), extra={member: b"evil\n"})
    server.files["deep3_fraktur19.tar.gz"] = archive
    set_entry(registry, "deep3_fraktur19", url=f"{server.base}/ok/deep3_fraktur19.tar.gz")
    target = tmp_path / "pretrained"
    run = cli("get", "deep3_fraktur19", "--dir", target, "--registry", registry)
    assert run.code == 2, run.err
    assert repr(member) in run.error and "refusing the archive" in run.error
    why = {"tar symlink": "is a symbolic link (links are refused", "zip absolute": "has an absolute path"}
    assert why.get(kind, "(a '..' component)") in run.error, run.error  # the one rule of data.archives
    assert entries(target) == [] and not (tmp_path / "evil" / "evil").exists()
    assert entry(registry, "deep3_fraktur19")["sha256"] is None


def test_calamari1_archive_under_a_cala2_name_is_refused(tmp_path, server, registry):
    folder = model_folder(tmp_path / "src", "deep3_fraktur19", "cala1")
    server.files["deep3_fraktur19.tar.gz"] = tar_gz(folder, tmp_path / "a.tar.gz")
    set_entry(registry, "deep3_fraktur19", url=f"{server.base}/ok/deep3_fraktur19.tar.gz")
    target = tmp_path / "pretrained"
    run = cli("get", "deep3_fraktur19", "--dir", target, "--registry", registry)
    assert run.code == 2, run.err
    assert "deep3_fraktur19/0.ckpt.json is a Calamari 1 model" in run.error and "cala2" in run.error
    assert ".tmp-" not in run.error  # the member is named inside the archive, not by its temporary path
    assert entries(target) == [] and entry(registry, "deep3_fraktur19")["sha256"] is None


def test_missing_weights_are_refused(tmp_path, server, registry):
    folder = model_folder(tmp_path / "src", "fraktur_19th_century", "cala1")
    (folder / "1.ckpt.h5").unlink()
    server.files["fraktur_19th_century.zip"] = zip_of(folder, tmp_path / "a.zip")
    set_entry(registry, "fraktur_19th_century", url=f"{server.base}/ok/fraktur_19th_century.zip")
    run = cli("get", "fraktur_19th_century", "--dir", tmp_path / "pretrained", "--registry", registry)
    assert run.code == 2 and "1.ckpt.json has no weights" in run.error
    assert entries(tmp_path / "pretrained") == []


# --------------------------------------------------------------------------------------- offline, list


def test_offline_from_a_mirror_directory_and_from_an_archive_then_list(tmp_path, registry):
    """The registry's URLs are unreachable: --from DIR (a release archive with the model in a subfolder of
    a subfolder) and --from ARCHIVE (a zip) install without the network; list shows what is present."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    nested = model_folder(tmp_path / "src" / "release-0.0.3", "deep3_fraktur19", "cala2")
    tar_gz(nested.parent, mirror / "deep3_fraktur19.tar.gz")  # release-0.0.3/deep3_fraktur19/…
    zipped = zip_of(model_folder(tmp_path / "src", "fraktur_19th_century", "cala1"), tmp_path / "f19.zip")
    target = tmp_path / "pretrained"
    # a temporary directory left by a killed get is cleared by the next one
    stale = target / ".tmp-deep3_fraktur19-killed"
    (stale / "unpacked").mkdir(parents=True)
    (stale / ".lock").touch()

    listed = cli("list", "--dir", target, "--registry", registry)
    assert listed.code == 0 and listed.out.count(": missing") == 4, listed.out
    # which entries are pinned, said honestly (issue 22, item 6): none yet in this registry
    assert listed.out.count("  not pinned: ") == 4 and "0 of 4 pinned by sha256;" in listed.out, listed.out

    run = cli("get", "deep3_fraktur19", "--dir", target, "--registry", registry, "--from", mirror)
    assert run.code == 0, run.err
    run = cli(
        "get", "fraktur_19th_century", "--dir", target, "--registry", registry, "--from", tmp_path / "f19.zip"
    )
    assert run.code == 0, run.err
    assert entry(registry, "fraktur_19th_century")["sha256"] == hashlib.sha256(zipped).hexdigest()
    assert entries(target) == ["deep3_fraktur19", "fraktur_19th_century"]

    (target / "deep3_lsh4").mkdir()  # a hand-made, empty folder
    listed = cli("list", "--dir", target, "--registry", registry)
    assert listed.code == 0, listed.err
    sha = hashlib.sha256(zipped).hexdigest()
    assert f"sha256 {sha} (checked before anything is installed)" in listed.out, listed.out
    assert "2 of 4 pinned by sha256: deep3_fraktur19, fraktur_19th_century;" in listed.out, listed.out
    assert f"deep3_fraktur19: present ({target / 'deep3_fraktur19'})" in listed.out
    assert f"fraktur_19th_century: present ({target / 'fraktur_19th_century'})" in listed.out
    assert "deep3_lsh4: incomplete: no ensemble member" in listed.out
    assert (
        f"antiqua_historical: missing (get: python -m hsbcala.pretrained get antiqua_historical "
        f"--dir {target})" in listed.out
    )
    assert (
        "https://github.com/Calamari-OCR/calamari_models/releases/download/1.1/antiqua_historical.zip"
        not in listed.out
    )
    assert (
        f"{UNREACHABLE}/antiqua_historical.zip" in listed.out
        and "network deep3, model version 6" in listed.out
    )

    (target / "fraktur_19th_century" / "0.ckpt.h5").unlink()
    listed = cli("list", "--dir", target, "--registry", registry)
    assert "fraktur_19th_century: incomplete:" in listed.out and "0.ckpt.h5" in listed.out
    refused = cli("get", "deep3_lsh4", "--dir", target, "--registry", registry, "--from", mirror)
    assert refused.code == 2 and "exists but is no complete deep3_lsh4" in refused.error


@pytest.mark.parametrize("name", ["deep3_fraktur19", "fraktur_19th_century"])
def test_a_one_model_release_installs_as_the_first_member(tmp_path, registry, name):
    """evaluate.py's eval.export archive (``<name>/best.ckpt.json`` + weights + card) is a model to fine-tune
    from: installed as the one member 0.ckpt.json that a warm start takes, weights renamed with it."""
    calamari = TEAM[name]
    folder = model_folder(tmp_path / "src", name, calamari, members=1)
    for f in sorted(folder.iterdir()):
        f.rename(f.with_name("best" + f.name.removeprefix("0")))
    (folder / "README.md").write_text("# the model card\n", encoding="utf-8")
    archive = tmp_path / "release.tar.gz"
    tar_gz(folder, archive)
    set_entry(registry, name, members=1)
    target = tmp_path / "pretrained"
    run = cli("get", name, "--dir", target, "--registry", registry, "--from", archive)
    assert run.code == 0, run.err
    assert "installed as the one ensemble member 0.ckpt.json" in run.err
    model = target / name
    assert pretrained.check_model(model, pretrained.load_registry(registry)[name])
    weights = {"cala2": ["0.ckpt"], "cala1": ["0.ckpt.h5"]}[calamari]
    assert entries(model) == sorted(["0.ckpt.json", "README.md", *weights])
    # two models in one archive stay refused: which one would be the member?
    shutil.copy(folder / "best.ckpt.json", folder / "last.ckpt.json")
    tar_gz(folder, archive)
    set_entry(registry, name, size=None, sha256=None)  # another archive than the one recorded
    refused = cli("get", name, "--dir", tmp_path / "other", "--registry", registry, "--from", archive)
    assert refused.code == 2 and "no 0.ckpt.json" in refused.error and entries(tmp_path / "other") == []


def test_from_archive_takes_one_name(tmp_path, registry):
    archive = tmp_path / "x.zip"
    zip_of(model_folder(tmp_path / "src", "fraktur_19th_century", "cala1"), archive)
    run = cli("get", "fraktur_19th_century", "antiqua_historical", "--registry", registry, "--from", archive)
    assert run.code == 2 and "name one model" in run.error


def test_unknown_name_lists_the_known_ones(tmp_path, registry):
    run = cli("get", "deep3_fraktur", "--dir", tmp_path / "p", "--registry", registry)
    assert run.code == 2 and "'deep3_fraktur'" in run.error and "deep3_fraktur19, deep3_lsh4" in run.error
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------ train.py's missing model


def test_missing_warmstart_model_names_the_exact_get_command(tmp_path, registry, monkeypatch):
    """preset=full's model path <pretrained_dir>/<name>/0.ckpt.json → the get command; running it (offline,
    --from an archive) makes the same warm start work."""
    from hsbcala.train.plan import _warmstart

    cala2 = engines.get("cala2")
    pretrained_dir = tmp_path / "my pretrained"
    model = pretrained_dir / "deep3_fraktur19" / "0.ckpt.json"
    with pytest.raises(DataError) as exc:
        _warmstart(SimpleNamespace(model=str(model)), None, cala2, False)
    msg = str(exc.value)
    command = f"python -m hsbcala.pretrained get deep3_fraktur19 --dir {shlex.quote(str(pretrained_dir))}"
    assert command in msg and "\n" not in msg

    archive = tar_gz(model_folder(tmp_path / "src", "deep3_fraktur19", "cala2"), tmp_path / "d.tar.gz")
    monkeypatch.setenv(pretrained.REGISTRY_ENV, str(registry))
    argv = shlex.split(command)[3:] + ["--from", str(tmp_path / "d.tar.gz")]
    run = cli(*argv)
    assert run.code == 0, run.err
    assert entry(registry, "deep3_fraktur19")["sha256"] == hashlib.sha256(archive).hexdigest()
    weights, network, _ = _warmstart(SimpleNamespace(model=str(model)), None, cala2, False)
    assert weights == str(model) and network == "deep3"

    with pytest.raises(DataError) as exc:  # not a registered model: says where to put it, as before
        _warmstart(SimpleNamespace(model=str(tmp_path / "mine" / "best.ckpt.json")), None, cala2, False)
    assert "pretrained get" not in str(exc.value) and "warmstart.model" in str(exc.value)


def test_the_repository_registry_was_not_written():
    assert REPO_REGISTRY.read_bytes() == REPO_REGISTRY_BYTES
