"""The manifest (hsbcala.data.manifest) and the hash cache (hsbcala.data.hashcache) on real Fraktur and UW3 lines."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from hsbcala.data import hashcache, manifest
from tests.gt_helpers import SHARED, books, copy_book, gt_of, need, prepare


@pytest.fixture
def lines(tmp_path) -> tuple[list[Path], list[Path]]:
    b = books()
    return copy_book(b[0], tmp_path / "train", 6, old=True), copy_book(b[1], tmp_path / "val", 3, old=True)


def test_every_line_with_hashes_size_and_split(tmp_path, lines):
    train, val = lines
    dp = prepare(tmp_path)
    m = dp.manifest
    assert m["format"] == manifest.FORMAT and m["status"] == "passed"
    assert [r["image"] for r in m["lines"]] == [str(p) for p in train + val]
    for r in m["lines"]:
        image = Path(r["image"])
        assert r["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        assert r["gt_sha256"] == hashlib.sha256(gt_of(image).read_bytes()).hexdigest()
        assert r["gt"] == str(gt_of(image))
        assert r["text"] == gt_of(image).read_text(encoding="utf-8").strip()
        with Image.open(image) as im:
            assert (r["width"], r["height"]) == im.size
        assert r["split"] == ("train" if image in train else "val") and r["variant"] is None
    t = m["totals"]
    assert (t["lines"], t["train"]["lines"], t["val"]["lines"], t["dropped"]) == (9, 6, 3, 0)
    assert t["train"]["documents"] == t["val"]["documents"] == 1
    assert t["image_bytes"] == sum(p.stat().st_size for p in train + val)


def test_written_manifest_is_deterministic_and_says_when_data_changed(tmp_path, lines):
    dp = prepare(tmp_path)
    assert dp.write(tmp_path / "model") is None
    first = (tmp_path / "model" / manifest.MANIFEST_FILE).read_bytes()
    assert json.loads(first) == dp.manifest
    assert dp.manifest_sha256 == hashlib.sha256(first).hexdigest()
    again = prepare(tmp_path)
    assert again.write(tmp_path / "model") is None
    assert (tmp_path / "model" / manifest.MANIFEST_FILE).read_bytes() == first
    gt = gt_of(lines[0][0])
    gt.write_text(gt.read_text(encoding="utf-8") + "x", encoding="utf-8")
    note = prepare(tmp_path).write(tmp_path / "model")
    assert note and "differ from the previous launch" in note


def test_content_hash_ignores_where_the_data_lies(tmp_path, lines):
    a = prepare(tmp_path).manifest
    other = tmp_path / "copy"
    shutil.copytree(tmp_path / "train", other / "train")
    shutil.copytree(tmp_path / "val", other / "val")
    b = prepare(other).manifest
    assert a["content_sha256"] == b["content_sha256"]
    assert manifest.dumps(a) != manifest.dumps(b)  # the paths differ


def test_variants_of_a_line(tmp_path):
    src = sorted(need(SHARED / "data" / "uw3-lines" / "train").glob("*.bin.png"))[:3]
    for d in ("train", "val"):
        (tmp_path / d).mkdir()
    for i, png in enumerate(src):
        d = tmp_path / ("val" if i == 2 else "train")
        shutil.copyfile(png, d / png.name)
        shutil.copyfile(gt_of(png), d / gt_of(png).name)
    m = prepare(tmp_path).manifest
    assert {r["variant"] for r in m["lines"]} == {"bin"}
    assert all(r["gt"].endswith(".gt.txt") and ".bin" not in r["gt"] for r in m["lines"])


def test_an_unchanged_data_set_is_not_hashed_again(tmp_path, lines):
    cold = prepare(tmp_path)
    assert (cold.cache_hits, cold.cache_misses) == (0, 9)
    warm = prepare(tmp_path)
    assert (warm.cache_hits, warm.cache_misses) == (9, 0)
    assert warm.manifest == cold.manifest
    # a changed image is read again (and only that one), also when its size stays the same
    image = lines[0][2]
    raw = bytearray(image.read_bytes())
    raw[-20] ^= 0xFF  # in the last IDAT chunk (data or CRC): a bit flip the checks must find
    image.write_bytes(bytes(raw))
    os.utime(image, ns=(1_700_000_000_000_000_000,) * 2)
    changed = prepare(tmp_path, "data.checks.bad_image=drop")
    assert (changed.cache_hits, changed.cache_misses) == (8, 1)
    assert [line.image for line, _ in changed.outcome.dropped] == [image]


def test_files_changed_just_now_are_not_cached(tmp_path, lines):
    train, _ = lines
    os.utime(train[0])  # now: within the racy window
    prepare(tmp_path)
    warm = prepare(tmp_path)
    assert (warm.cache_hits, warm.cache_misses) == (8, 1)


def test_no_cache_dir_means_no_cache(tmp_path, lines):
    prepare(tmp_path, "data.cache_dir=null")
    assert prepare(tmp_path, "data.cache_dir=null").cache_hits == 0
    assert not (tmp_path / "cache").exists()


def test_a_broken_cache_file_is_ignored(tmp_path, lines):
    prepare(tmp_path)
    for f in (tmp_path / "cache" / "files").glob("*.json"):
        f.write_text("{not json")
    dp = prepare(tmp_path)
    assert dp.cache_misses == 9 and dp.manifest["status"] == "passed"
    cache = hashcache.HashCache(tmp_path / "cache")
    st = os.stat(lines[0][0])
    assert cache.get(lines[0][0], st) is not None  # rewritten by the last run
