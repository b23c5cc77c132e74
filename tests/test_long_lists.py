"""Any size of ground truth (issue 9): explicit file lists (a document-wise split, dropped lines) longer than
hsbcala.train.plan.MAX_LISTED reach the engine as numbered links and one glob per image suffix, never as
tens of thousands of arguments (Linux refuses ~3 MB of them: E2BIG)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from hsbcala.train import plan as trainplan
from tests.conftest import run_inprocess


def _lines(root: Path, books: int, per_book: int) -> None:
    for b in range(books):
        d = root / f"book{b:03d}"
        d.mkdir(parents=True)
        for i in range(per_book):
            (d / f"l{i:04d}.png").write_bytes(b"")  # a dry run reads no line
            (d / f"l{i:04d}.gt.txt").write_text("x")


@pytest.mark.slow  # 60,000 files to create: seconds on a quiet disk, half a minute on a busy one
def test_a_split_of_30000_lines_is_a_short_command_line(tmp_path):
    _lines(tmp_path / "gt", books=30, per_book=1000)
    proc = run_inprocess(  # train.py, in this process
        "train",
        [
            "dry_run=true",
            f"paths.root={tmp_path}",
            f"model_dir={tmp_path / 'model'}",
            f"data.train=[{tmp_path}/gt/**/*.png]",
            "data.val=null",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert len(proc.stdout) < 5000, len(proc.stdout)
    i, j = argv.index("--train.images"), argv.index("--val.images")
    assert argv[i + 1 : j] == [f"{tmp_path}/model/lines/train/*.png"]
    assert argv[j + 1] == f"{tmp_path}/model/lines/val/*.png"
    assert not (tmp_path / "model").exists()  # a dry run creates nothing


def test_link_lines_names_each_image_and_its_gt_by_calamaris_rule(tmp_path):
    images = [f"/gt/a/p{i}.bin.png" for i in range(3)] + ["/gt/b/x.tif"]
    args, links = trainplan.link_lines(tmp_path / "lines" / "train", tuple(images))
    assert (args, links) == (tuple(images), None)  # short: as it is
    many = tuple(images * 700)
    args, links = trainplan.link_lines(tmp_path / "lines" / "train", many)
    assert args == (f"{tmp_path}/lines/train/*.png", f"{tmp_path}/lines/train/*.tif")
    assert links.pairs[:2] == (("000001.png", "/gt/a/p0.bin.png"), ("000001.gt.txt", "/gt/a/p0.gt.txt"))
    assert len(links.pairs) == 2 * len(many)


@pytest.mark.slow
def test_a_real_training_reads_its_lines_through_the_links(tmp_path, fraktur_books, monkeypatch):
    """In this process with MAX_LISTED lowered, so a small split goes through links to a real engine."""
    (train_book, *_), (val_book,) = fraktur_books
    monkeypatch.setattr(trainplan, "MAX_LISTED", 5)
    result = run_inprocess(
        "train",
        [
            f"paths.root={tmp_path}",
            f"model_dir={tmp_path / 'model'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db",
            f"data.train=[{train_book}/*.png,{val_book}/*.png]",
            "data.val=null",
            "data.split.val_fraction=0.3",
            "train.epochs=1",
            "train.samples_per_epoch=16",
            "train.batch_size=8",
            "train.workers=1",
            "train.network='cnn=8:3x3,pool=2x2,lstm=16'",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = tmp_path / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    n_train = sum(1 for x in manifest["lines"] if x["split"] == "train")
    links = sorted((model / "lines" / "train").glob("*.png"))
    assert len(links) == n_train and all(p.is_symlink() for p in links)
    assert os.readlink(links[0]) in {x["image"] for x in manifest["lines"] if x["split"] == "train"}
    log = (model / "engine.log").read_text()
    assert f"--train.images '{model}/lines/train/*.png'" in log  # the header line: the command as run
    params = json.loads(next(model.glob("checkpoint/checkpoint_*/trainer_params.json")).read_text())
    assert params["gen"]["train"]["images"] == [f"{model}/lines/train/*.png"]  # what Calamari 2 read
