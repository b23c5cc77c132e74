"""GT archives (hsbcala.data.archives): real lines in .tar.gz and .zip are accepted wherever a data directory is,
unpacked once and safely; an archive with a '../' member or a link out is refused and leaves nothing behind."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from hsbcala.core.errors import ConfigError, DataError
from hsbcala.data import archives
from hsbcala.data.hashcache import HashCache
from hsbcala.data.resolve import resolve
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


# ----------------------------------------------------------------------------------------- bombs and limits


ZEROS = 16 << 20  # 16 MiB of zeros: ~16 KB deflated (ratio ~1000:1, a zip bomb's), little disk when refused


def zip_bomb(path: Path, src: Path | None = None, n: int = ZEROS) -> Path:
    """Real lines (optional) plus a member of n zeros, deflated: a small zip that inflates ~1000 times."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*")) if src else ():
            zf.write(f, str(f.relative_to(src)))
        with zf.open("bomb/0001.png", "w") as member:
            for _ in range(n >> 20):
                member.write(bytes(1 << 20))
    return path


def tar_bomb(path: Path, n: int = ZEROS) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("bomb/0001.png")
        info.size = n
        with open("/dev/zero", "rb") as zeros:
            tf.addfile(info, zeros)
        for i in range(3):  # members after the bomb: never reached
            data = b"x" * 10
            info = tarfile.TarInfo(f"bomb/{i:04d}.gt.txt")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def nothing_unpacked(root: Path) -> bool:
    base = root / "archives"
    return not base.exists() or [p.name for p in base.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("make", [zip_bomb, tar_bomb], ids=["zip", "tar.gz"])
def test_archive_bomb_is_refused_before_anything_is_written(tmp_path, make):
    archive = make(tmp_path / ("bomb.zip" if make is zip_bomb else "bomb.tar.gz"))
    assert archive.stat().st_size < 100_000  # 16 MiB inside
    root = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        resolve([str(archive)], key="data.train", base=tmp_path, archive_root=root)
    message = str(info.value)
    assert message.startswith(f"data.train: archive {archive} unpacks to more than 100 times its ")
    assert "(data.archive_max_ratio; " in message and "'bomb/0001.png': a zip bomb?" in message
    assert "nothing was unpacked" in message and "\n" not in message
    assert nothing_unpacked(root)
    # the byte cap alone (ratio off): the same, naming data.archive_max_bytes
    limits = archives.Limits(max_bytes=1_000_000, max_ratio=0)
    with pytest.raises(DataError, match=r"unpacks to more than 1,000,000 bytes \(data\.archive_max_bytes; "):
        archives.unpack(archive, key="data.train", root=root, limits=limits)
    assert nothing_unpacked(root)
    # both caps off: it unpacks (the only test that writes the 16 MiB)
    target = archives.unpack(archive, root=root, limits=archives.Limits(max_bytes=0, max_ratio=0))
    assert (target / "bomb" / "0001.png").stat().st_size == ZEROS


def test_archive_limits_are_config_keys_of_the_data_step(tmp_path, gt_dir):
    make_zip(tmp_path / "gt.zip", gt_dir)  # real lines: ratio ~1, well under both caps
    size = sum(f.stat().st_size for f in gt_dir.rglob("*") if f.is_file())
    dp = prepare(tmp_path, "data.train=[gt.zip]", "data.val=null")
    assert dp.n_train + dp.n_val == 10
    cache = tmp_path / "cache2"
    with pytest.raises(DataError) as info:
        prepare(
            tmp_path,
            "data.train=[gt.zip]",
            "data.val=null",
            f"data.cache_dir={cache}",
            f"data.archive_max_bytes={size - 1}",
        )
    assert str(info.value).startswith(
        f"data.train: archive {tmp_path / 'gt.zip'} unpacks to more than {size - 1:,} bytes "
        f"(data.archive_max_bytes; {size:,} bytes up to member "
    )
    assert nothing_unpacked(cache)
    zip_bomb(tmp_path / "bomb.zip", gt_dir)
    with pytest.raises(DataError, match=r"bomb\.zip unpacks to more than 50 times .*data\.archive_max_ratio"):
        prepare(tmp_path, "data.train=[bomb.zip]", "data.val=null", "data.archive_max_ratio=50")
    with pytest.raises(ConfigError, match="data.archive_max_ratio must be >= 0"):
        prepare(tmp_path, "data.archive_max_ratio=-1")


def test_an_archive_failing_halfway_leaves_nothing(tmp_path, gt_dir):
    # a zip whose last member's size is a lie (the central directory says 1000 bytes, the data inflate to 1 MiB):
    # the real lines are written first, then the CRC check fails: nothing half-unpacked may stay in the cache
    archive = zip_bomb(tmp_path / "lie.zip", gt_dir, n=1 << 20)
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        pos, n_entries = zf.start_dir, len(zf.infolist())
    for _ in range(n_entries):  # central directory entries: 46 bytes, then name, extra, comment
        assert raw[pos : pos + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, pos + 28)
        if raw[pos + 46 : pos + 46 + name_len] == b"bomb/0001.png":
            struct.pack_into("<I", raw, pos + 24, 1000)  # its uncompressed size
        pos += 46 + name_len + extra_len + comment_len
    archive.write_bytes(bytes(raw))
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("bomb/0001.png").file_size == 1000
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"lie\.zip does not unpack: BadZipFile: Bad CRC-32"):
        archives.unpack(archive, root=root)
    assert nothing_unpacked(root)


def test_leftover_of_a_killed_unpack_is_removed(tmp_path, gt_dir):
    archive = make_zip(tmp_path / "gt.zip", gt_dir)
    root = tmp_path / "cache"
    name = HashCache(root).file_sha256(archive)[:20]
    stale = root / "archives" / f".tmp-{name}-killed"  # as a SIGKILLed unpacker leaves it
    (stale / "book").mkdir(parents=True)
    (stale / "book" / "half.png").write_bytes(b"\x89PNG half")
    target = archives.unpack(archive, root=root)
    assert not stale.exists() and len(list(target.rglob("*.png"))) == 10
