"""Seeded document-wise splits (hsbcala.data.split) on the real Fraktur books: no book on both sides, the same seed
gives the same split, and the saved split is what a later launch (and the dry run) uses."""

from __future__ import annotations

import json
import shlex
from collections import defaultdict
from pathlib import Path

import pytest

from hsbcala.core.errors import DataError
from hsbcala.data import split
from hsbcala.data.resolve import resolve
from tests.conftest import run_inprocess
from tests.gt_helpers import FRAKTUR, books, copy_book, need, prepare


@pytest.fixture(scope="module")
def ba_images() -> tuple[Path, ...]:
    return resolve(["ref_BA/**/*.png"], key="data.train", base=need(FRAKTUR))


def sides_of_documents(s: split.Split) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = defaultdict(set)
    for name in ("train", "val"):
        for p in getattr(s, name):
            sides[s.documents[p]].add(name)
    return sides


def test_no_book_on_both_sides(ba_images):
    s = split.make(ba_images, seed=50, fraction=0.1, by="directory", pattern=None)
    assert len(s.train) + len(s.val) == len(ba_images) == 1850
    sides = sides_of_documents(s)
    assert len(sides) == 37 and all(len(v) == 1 for v in sides.values())
    # every line of a validation book is in validation, and the book is its directory
    for p in s.val:
        assert {q for q in ba_images if q.parent == p.parent} <= set(s.val)
    assert 0.05 <= len(s.val) / len(ba_images) <= 0.2, len(s.val)


def test_same_seed_same_split_other_seed_other_split(ba_images):
    a = split.make(ba_images, seed=50, fraction=0.1, by="directory", pattern=None)
    b = split.make(list(reversed(ba_images)), seed=50, fraction=0.1, by="directory", pattern=None)
    assert (a.train, a.val) == (b.train, b.val)
    others = {
        tuple(
            split.make(ba_images, seed=s, fraction=0.1, by="directory", pattern=None).side_documents()["val"]
        )
        for s in range(1, 6)
    }
    assert len(others) > 1


def test_split_by_file_name_pattern_keeps_pages_together(ba_images):
    # ref_BA names lines <book>_<year>_<page>_<line>.png: a page is the name without the line number
    s = split.make(ba_images, seed=7, fraction=0.2, by="pattern", pattern=r"^(.*)_\d+\.png$")
    sides = sides_of_documents(s)
    assert len(sides) > 37  # pages, not books
    assert all(len(v) == 1 for v in sides.values())
    assert all(doc.count("/") == 1 for doc in sides)  # <book dir>/<book>_<year>_<page>


def test_pattern_that_does_not_match_names_the_file(ba_images):
    with pytest.raises(DataError, match=r"data\.split\.pattern='\^nomatch' does not match .*\.png"):
        split.make(ba_images[:5], seed=1, fraction=0.1, by="pattern", pattern="^nomatch")


def test_one_document_cannot_be_split(tmp_path):
    images = copy_book(books()[0], tmp_path / "train", 8)
    with pytest.raises(DataError, match="all 8 lines of data.train are in one document"):
        split.make(images, seed=1, fraction=0.1, by="directory", pattern=None)


def test_every_side_gets_a_document():
    s = split.choose_val({"a": 1, "b": 1000}, fraction=0.9, seed=3)
    assert s in ({"a"}, {"b"})
    assert split.choose_val({"big": 100, "small": 3}, fraction=0.01, seed=0) == {"small"}


# ------------------------------------------------------------------------------- in the data step, saved


@pytest.fixture
def three_books(tmp_path) -> list[Path]:
    out = []
    for i, book in enumerate(books()[:4]):
        out += copy_book(book, tmp_path / "train" / f"b{i}", 5)
    return out


def test_split_in_the_data_step_is_saved_and_reused(tmp_path, three_books):
    dp = prepare(tmp_path, "data.val=null", "data.train=[train/**/*.png]")
    assert dp.split is not None and dp.n_train + dp.n_val == 20 and dp.n_val == 5
    assert set(dp.engine_val) == {str(p) for p in dp.split.val}  # files, not patterns
    assert {r["split"] for r in dp.manifest["lines"]} == {"train", "val"}
    dp.write(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "split.json").read_text())
    assert [e["image"] for e in saved["val"]] == list(dp.engine_val)
    # a later launch with another seed keeps the saved split, and says so; a new line joins its book's side
    val_book = Path(dp.engine_val[0]).parent
    new = copy_book(books()[0], tmp_path / "extra", 6)[5]
    for f in (new, new.with_suffix("").with_suffix(".gt.txt")):
        f.rename(val_book / f"zz{f.name}")
    again = prepare(tmp_path, "data.val=null", "data.train=[train/**/*.png]", "data.split.seed=99")
    assert again.split.reused and set(dp.engine_val) < set(again.engine_val)
    assert str(val_book / f"zz{new.name}") in again.engine_val
    assert any("settings differ" in n for n in again.split.notes)
    assert any("1 line(s) not in the saved split" in n for n in again.split.notes)


def test_dry_run_prints_the_split_that_training_uses(tmp_path, three_books):
    common = [
        f"paths.root={tmp_path}",
        f"model_dir={tmp_path / 'model'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.train=[train/**/*.png]",
        "data.val=null",
        "data.split.seed=3",
    ]
    check = run_inprocess(
        "train", [*common, "data_check_only=true"], cwd=tmp_path
    )  # train.py, in this process
    assert check.returncode == 0, check.stderr
    saved = json.loads((tmp_path / "model" / "split.json").read_text())
    dry = run_inprocess("train", [*common, "dry_run=true"], cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    argv = shlex.split(dry.stdout.strip())
    i, j = argv.index("--val.images"), argv.index("--train.images")
    val = argv[i + 1 : i + 1 + len(saved["val"])]
    train = argv[j + 1 : j + 1 + len(saved["train"])]
    assert val == [e["image"] for e in saved["val"]] and train == [e["image"] for e in saved["train"]]
