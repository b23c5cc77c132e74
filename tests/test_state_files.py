"""The files hsbcala reads back are right or refused (issue 19, items 1 and 8).

``hsbcala-state.json`` tells a relaunch which MLflow run to continue and that a model has finished; read as
"no state" when damaged, a finished model was trained again in a new run and an interrupted one lost its run.
Here the state file of a real trained model is cut short (as a node crash before the data reached the disk
leaves it) and the same command is launched again: refused with one line, no MLflow run opened, nothing
trained. The writes themselves are made durable (``fsync`` of the file before the rename, of the directory
after), and the other files read back later (split, codec report, hash cache) go through the same write.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hsbcala import modeldir
from hsbcala.core import fsutil
from hsbcala.core.errors import FILE_SYSTEM_EXIT, DataError
from hsbcala.data import codec
from hsbcala.data.hashcache import HashCache
from tests.conftest import run_inprocess
from tests.gt_helpers import books, copy_book, prepare

# The session's tiny models trained through train.py (tests/test_evaluate.py's fixture; a session that runs both
# modules trains them once per module, until the fixture moves to tests/conftest.py).
from tests.test_evaluate import VERSIONS


# --------------------------------------------------------------------------------------- read_json, strictly
def test_read_json_missing_file_is_the_only_empty_answer(tmp_path):
    assert fsutil.read_json(tmp_path / "nothing.json") == {}
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}', encoding="utf-8")
    assert fsutil.read_json(good) == {"a": 1}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "it is empty"),
        (b'{"version": "cala2", "run_id": "ab', "not valid JSON"),  # cut short
        (b"\x00" * 64, "not valid JSON"),  # a crash before the data reached the disk (XFS/ext4: zeros)
        (b'["cala2"]', "holds a JSON list, not an object"),
        (b'{"a": "\xff\xfe"}', "not UTF-8"),
    ],
    ids=["empty", "truncated", "zeros", "list", "not-utf8"],
)
def test_read_json_refuses_a_damaged_file_naming_it_and_the_fault(tmp_path, content, problem):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(fsutil.Unreadable) as err:
        fsutil.read_json(path, recover="delete it")
    msg = str(err.value)
    assert isinstance(err.value, DataError) and err.value.exit_code == 2
    assert msg.startswith(f"{path} cannot be read: ") and problem in msg and msg.endswith("; delete it")
    assert "\n" not in msg


def test_read_json_of_a_file_the_system_will_not_read_is_a_file_system_error(tmp_path):
    (tmp_path / "f.json").mkdir()  # EISDIR (a permission denied would not stop root, who runs CI containers)
    with pytest.raises(fsutil.Unreadable) as err:
        fsutil.read_json(tmp_path / "f.json")
    assert err.value.exit_code == FILE_SYSTEM_EXIT and "Is a directory" in str(err.value)


def test_an_engines_record_cut_short_is_no_record(tmp_path):
    """Engines write their checkpoint records in place: one cut short by a kill is not a checkpoint."""
    (tmp_path / "r.json").write_text('{"iter": 20, "outputDir": "/x', encoding="utf-8")
    assert fsutil.read_json_if_complete(tmp_path / "r.json") == {}
    assert fsutil.read_json_if_complete(tmp_path / "none.json") == {}


@pytest.mark.parametrize(
    "content",
    [b'{"version": "cala2", "run_id": "0123', b"", b'{"run_id": "x"}', b'{"version": "cala3"}'],
    ids=["truncated", "empty", "no-version", "unknown-version"],
)
def test_a_damaged_state_file_is_refused_not_taken_for_no_state(tmp_path, content):
    (tmp_path / modeldir.STATE_FILE).write_bytes(content)
    for read in (modeldir.load_state, modeldir.detect_version):
        with pytest.raises(fsutil.Unreadable, match="hsbcala-state.json cannot be read: .*move it aside"):
            read(tmp_path)
    assert modeldir.load_state(tmp_path / "elsewhere") is None  # no state file at all: no state


# --------------------------------------------------------------------------------------- durable writes
@pytest.fixture
def syncs(monkeypatch) -> list[tuple[str, str]]:
    """Every fsync (of which file or directory) and rename, in order (the real calls are still made)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.fspath(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _durably_replaced(events: list[tuple[str, str]], target: Path) -> bool:
    """The data of ``target`` synced before its rename, its directory synced after."""
    i = events.index(("replace", str(target)))
    before = [e for e in events[:i] if e[0] == "fsync" and Path(e[1]).name.startswith(f".{target.name}.")]
    return bool(before) and ("fsync", str(target.parent)) in events[i + 1 :]


def test_atomic_writes_sync_the_file_before_the_rename_and_the_directory_after(tmp_path, syncs):
    target = tmp_path / modeldir.STATE_FILE
    fsutil.atomic_write_json(target, {"version": "cala2"})
    assert _durably_replaced(syncs, target)
    assert json.loads(target.read_text(encoding="utf-8")) == {"version": "cala2"}
    assert [p.name for p in tmp_path.iterdir()] == [modeldir.STATE_FILE]  # no temporary file left
    umask = os.umask(0o027)
    try:
        fsutil.atomic_write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(umask)
    assert (
        tmp_path / "shared.json"
    ).stat().st_mode & 0o777 == 0o640  # as open() creates it, not mkstemp's 0600


def test_split_codec_report_and_hash_cache_are_written_durably(tmp_path, syncs):
    """The data step's files that later launches read back: the saved split (reused), the codec report
    (evaluation's baseline reads the warm-start model from it), the hash cache's files."""
    for i, book in enumerate(books()[:4]):
        copy_book(book, tmp_path / "train" / f"b{i}", 3, old=True)  # old: cacheable at once
    plan = prepare(tmp_path, "data.val=null", "data.train=[train/**/*.png]")
    counts = codec.count_chars(["abd"])  # a report as a warm start gives it (its content does not matter)
    plan.codec_report = codec.report(counts, "abc", model="m.ckpt.json", model_version=2, policy="extend")
    plan.write(tmp_path / "model")
    written = [tmp_path / "model" / n for n in ("split.json", codec.REPORT_JSON, codec.REPORT_TXT)]
    shards = sorted((tmp_path / "cache" / "files").glob("*.json"))
    assert len(shards) == 4
    for path in [*written, *shards]:
        assert _durably_replaced(syncs, path), path


def test_a_damaged_hash_cache_file_is_discarded_with_a_message(tmp_path, capsys):
    lines = copy_book(books()[0], tmp_path / "book", 2, old=True)
    cache = HashCache(tmp_path / "cache")
    for p in lines:
        cache.put(p, p.stat(), {"sha256": "x"})
    cache.save()
    (shard,) = (tmp_path / "cache" / "files").glob("*.json")
    shard.write_bytes(shard.read_bytes()[:20])  # cut short by a tool of its own, or a disk error
    again = HashCache(tmp_path / "cache")
    assert again.get(lines[0], lines[0].stat()) is None
    err = capsys.readouterr().err
    assert f"hash cache {shard} discarded (it is not valid JSON" in err and str(lines[0].parent) in err
    again.put(lines[0], lines[0].stat(), {"sha256": "y"})
    again.save()  # rewritten whole; reported once
    assert capsys.readouterr().err.count("discarded") == 0
    assert HashCache(tmp_path / "cache").get(lines[0], lines[0].stat())["sha256"] == "y"


# --------------------------------------------------------------------------------------- a real relaunch
def _runs(tmp: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def _state_cut_short(model: Path) -> bytes:
    """The state file as a crash leaves it when its data had not reached the disk before the rename: cut
    short after the run id began (the file keeps its length in blocks; its tail is lost)."""
    state = model / modeldir.STATE_FILE
    text = state.read_bytes()
    cut = text[: text.index(b'"run_id"') + 20]
    state.write_bytes(cut)
    return cut


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("when", ["finished", "interrupted"])
def test_a_relaunch_with_a_damaged_state_refuses_and_trains_nothing(
    tmp_path,
    tiny_models,
    shared_books,
    version,
    when,
):
    from tests.test_train_integration import tiny

    model = tmp_path / f"model-{version}"
    shutil.copytree(tiny_models / f"model-{version}", model, symlinks=True)
    shutil.copy2(tiny_models / "mlruns.db", tmp_path / "mlruns.db")
    state = json.loads((model / modeldir.STATE_FILE).read_text(encoding="utf-8"))
    assert state["status"] == "finished" and state["run_id"]
    if when == "interrupted":  # as a launch stopped after a checkpoint leaves it: status training, same run
        state["status"] = "training"
        fsutil.atomic_write_json(model / modeldir.STATE_FILE, state)
    cut = _state_cut_short(model)
    runs = {r.info.run_id for r in _runs(tmp_path)}
    log = (model / modeldir.ENGINE_LOG).read_bytes()

    res = run_inprocess("train", tiny(tmp_path, shared_books[:2], shared_books[2:3], version), cwd=tmp_path)

    assert res.returncode == 2, res.stderr[-3000:]
    (error,) = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert error.startswith(
        f"hsbcala: error: {model / modeldir.STATE_FILE} cannot be read: it is not valid JSON"
    )
    assert error.endswith(modeldir.STATE_RECOVER)
    assert "Traceback" not in res.stderr
    assert {r.info.run_id for r in _runs(tmp_path)} == runs  # no run opened
    assert (model / modeldir.ENGINE_LOG).read_bytes() == log  # no engine started
    assert (model / modeldir.STATE_FILE).read_bytes() == cut  # the evidence is left as it was
