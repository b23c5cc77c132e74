"""GT archives (hsbcala.archives): real lines in .tar.gz and .zip are accepted wherever a data directory is,
unpacked once and safely; an archive with a '../' member or a link out is refused and leaves nothing behind."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from hsbcala import archives
from hsbcala.data import resolve
from hsbcala.errors import DataError
from tests.conftest import run_inprocess
from tests.gt_helpers import books, copy_book, gt_of, prepare


@pytest.fixture
def gt_dir(tmp_path) -> Path:
    """Two real books (5 lines each) under tmp/src/<book>/."""
    for book in books()[:2]:
        copy_book(book, tmp_path / "src" / book.name, 5)
    return tmp_path / "src"


def make_tar(
    path: Path, src: Path, extra: dict[str, bytes] | None = None, link: tuple[str, str] | None = None
):
    with tarfile.open(path, "w:gz") as tf:
        for f in sorted(src.rglob("*")):
            tf.add(f, arcname=str(f.relative_to(src)), recursive=False)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return path


def make_zip(path: Path, src: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, str(f.relative_to(src)))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_stands_for_its_directory(tmp_path, gt_dir, kind):
    archive = tmp_path / f"gt.{kind}"
    (make_tar if kind == "tar.gz" else make_zip)(archive, gt_dir)
    root = tmp_path / "cache"
    whole = resolve([str(archive)], key="data.train", base=tmp_path, archive_root=root)
    assert len(whole) == 10 and all(p.is_relative_to(root / "archives") for p in whole)
    assert all(gt_of(p).is_file() for p in whole)
    book = books()[0].name
    inner = resolve([f"gt.{kind}/{book}/*.png"], key="data.train", base=tmp_path, archive_root=root)
    assert len(inner) == 5 and {p.parent.name for p in inner} == {book}
    # unpacked once: the same directory, not unpacked again
    target = whole[0].parents[1]
    stamp = target.stat().st_mtime_ns
    assert archives.unpack(archive, root=root) == target and target.stat().st_mtime_ns == stamp
    assert [p.name for p in (root / "archives").iterdir() if not p.name.startswith(".")] == [target.name]


def test_archive_through_the_data_step_and_train_py(tmp_path, gt_dir):
    archive = make_tar(tmp_path / "gt.tar.gz", gt_dir)
    b0, b1 = books()[0].name, books()[1].name
    dp = prepare(tmp_path, f"data.train=[gt.tar.gz/{b0}/*.png]", f"data.val=[gt.tar.gz/{b1}/*.png]")
    assert dp.n_train == 5 and dp.n_val == 5 and all("archives" in p for p in dp.engine_train)
    dry = run_inprocess(  # train.py, in this process
        "train",
        [
            f"paths.root={tmp_path}",
            f"model_dir={tmp_path / 'model'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"data.train=[{archive}]",
            "data.val=null",
            "data.split.seed=1",
            "dry_run=true",
        ],
        cwd=tmp_path,
    )
    assert dry.returncode == 0, dry.stderr
    assert "gt.tar.gz" not in dry.stdout and dry.stdout.count(".png") == 10  # the unpacked files, split


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_member_with_dotdot_is_refused(tmp_path, gt_dir, kind):
    archive = tmp_path / f"evil.{kind}"
    (make_tar if kind == "tar.gz" else make_zip)(archive, gt_dir, extra={"../escaped.gt.txt": b"gotcha"})
    root = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        resolve([str(archive)], key="data.train", base=tmp_path, archive_root=root)
    message = str(info.value)
    assert message.startswith(f"data.train: archive {archive}: member '../escaped.gt.txt'")
    assert "refusing the archive" in message
    assert not list(tmp_path.rglob("escaped.gt.txt"))
    assert [
        p.name for p in (root / "archives").iterdir() if not p.name.endswith(".lock")
    ] == []  # no leftovers


def test_link_out_of_the_archive_is_refused(tmp_path, gt_dir):
    archive = make_tar(tmp_path / "link.tar.gz", gt_dir, link=("book/passwd.gt.txt", "/etc/passwd"))
    with pytest.raises(DataError, match=r"member 'book/passwd.gt.txt'.*refusing the archive"):
        archives.unpack(archive, root=tmp_path / "cache")
    archive = make_tar(tmp_path / "link2.tar.gz", gt_dir, link=("up.gt.txt", "../../outside"))
    with pytest.raises(DataError, match="member 'up.gt.txt'"):
        archives.unpack(archive, root=tmp_path / "cache")


def test_zip_symlink_and_absolute_members_are_refused(tmp_path, gt_dir):
    evil = tmp_path / "link.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        info = zipfile.ZipInfo("a.gt.txt")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="member 'a.gt.txt' is a symbolic link"):
        archives.unpack(evil, root=tmp_path / "cache")
    absolute = make_zip(tmp_path / "abs.zip", gt_dir, extra={"/tmp/abs.gt.txt": b"x"})
    with pytest.raises(DataError, match="has an absolute path"):
        archives.unpack(absolute, root=tmp_path / "cache")


def test_broken_archive_is_named(tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match=r"archive .*broken\.tar\.gz does not unpack"):
        archives.unpack(broken, root=tmp_path / "cache")


def test_data_check_only_with_an_archive_and_a_damaged_member(tmp_path, gt_dir):
    victim = sorted(gt_dir.rglob("*.png"))[3]
    gt_of(victim).unlink()
    archive = make_zip(tmp_path / "gt.zip", gt_dir)
    proc = run_inprocess(  # train.py, in this process
        "train",
        [
            f"paths.root={tmp_path}",
            f"model_dir={tmp_path / 'model'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"data.train=[{archive}]",
            "data.val=null",
            "data_check_only=true",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "image without .gt.txt" in last and f"{victim.parent.name}/{victim.name}" in last
    m = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert m["status"] == "failed"
