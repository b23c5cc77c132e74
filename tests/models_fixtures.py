"""The session's tiny trained models and the lines they read, each defined once (a pytest plugin named in
tests/conftest.py). A session fixture imported into a second test module becomes a second fixture there and
trains again: request these by name, never import them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED, need
from tests.test_evaluate import VERSIONS, base_overrides, run_evaluate
from tests.test_models import BOOKS, NET, SAFE, SORBIAN, _gt, _link_lines, _train


@pytest.fixture(scope="session")
def shared_books() -> list[Path]:
    return sorted(need(SHARED / "data" / "fraktur19-lines" / "ref_AS").iterdir())


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, shared_books) -> Path:
    """One tiny real model per version, trained through train.py (books 0-1, validated on book 2)."""
    from tests.test_train_integration import launch, tiny

    tmp = tmp_path_factory.mktemp("eval-models")
    for version in VERSIONS:
        proc = launch(tiny(tmp, shared_books[:2], shared_books[2:3], version))
        assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


@pytest.fixture(scope="session")
def variant_lines(tmp_path_factory, shared_books) -> Path:
    """Books 3-4 (never trained on), each line copied as ``<id>_GTSBB.png`` or ``<id>_GTPAGE.png`` with its
    GT, alternately; plus one line image without a GT file."""
    out = tmp_path_factory.mktemp("eval-lines")
    images = sorted(p for book in shared_books[3:5] for p in book.glob("*.png"))
    for i, png in enumerate(images):
        name = f"{png.stem}_{'GTSBB' if i % 2 else 'GTPAGE'}"
        shutil.copy(png, out / f"{name}.png")
        shutil.copy(png.with_suffix(".gt.txt"), out / f"{name}.gt.txt")
    shutil.copy(images[0], out / "nogt_GTSBB.png")
    assert any("—" in p.read_text(encoding="utf-8") for p in out.glob("*.gt.txt")), (
        "the lines should contain em dashes (Calamari 1 normalises them)"
    )
    return out


@pytest.fixture(scope="session")
def lines(tmp_path_factory) -> dict:
    """German Fraktur lines (train, val) limited to SAFE characters, and Sorbian-lettered copies of others."""
    books = sorted(p for p in need(BOOKS, "shared Fraktur lines").iterdir() if p.is_dir())
    root = tmp_path_factory.mktemp("lines")

    def safe(book: Path) -> list[Path]:
        return [
            p
            for p in sorted(book.glob("*.png"))
            if p.with_name(f"{p.stem}.gt.txt").is_file() and set(_gt(p)) <= SAFE
        ]

    train, val = safe(books[0])[:40], safe(books[1])[:10]
    _link_lines(root / "train", train)
    _link_lines(root / "val", val)
    sorb = root / "sorbian"
    sorb.mkdir()
    for png in sorted(books[2].glob("*.png"))[
        :16
    ]:  # real images, GT with Sorbian letters (only to grow the codec)
        shutil.copy(png, sorb / png.name)
        text = _gt(png)
        for old, new in zip("ecrl", SORBIAN, strict=True):
            text = text.replace(old, new, 1)
        (sorb / f"{png.stem}.gt.txt").write_text(text, encoding="utf-8")
    return {"root": root, "chars": set().union(*(set(_gt(p)) for p in train + val))}


@pytest.fixture(scope="session", params=[1, 2], ids=["calamari1", "calamari2"])
def tiny_model(request) -> tuple[int, Path]:
    """A tiny model trained on German Fraktur by Calamari <version>: (version, its best.ckpt.json)."""
    version = request.param
    root = request.getfixturevalue("lines")["root"]
    out = root / f"model{version}"
    proc = _train(version, out, f"{root}/train/*.png", f"{root}/val/*.png", NET[version])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return version, out / "best.ckpt.json"


@pytest.fixture(scope="session")
def multirun(tiny_models, variant_lines):
    """ONE real multirun: both versions x (own model, other version's model, an empty model dir), an extra
    variant group that matches nothing, and the release export."""
    tmp = tiny_models
    (tmp / "empty-model").mkdir(exist_ok=True)
    sweep = tmp / "sweep"
    proc = run_evaluate(
        "-m",
        "version=cala1,cala2",
        f"model_dir={tmp / 'model-cala1'},{tmp / 'model-cala2'},{tmp / 'empty-model'}",
        *base_overrides(tmp, variant_lines),
        f"hydra.sweep.dir={sweep}",
        "+eval.groups.olena=[*_GTOLENA*]",
        "eval.export=true",
        f"eval.export_dir={tmp / 'releases'}",
        # the model card's keys hsbcala cannot know (tests/test_release.py validates the card)
        "release.authors=[{name: Test Author, affiliation: Test Institute}]",
        "release.license=CC-BY-4.0",
    )
    results = {}
    for f in sweep.glob("*/eval-result.json"):
        r = json.loads(f.read_text(encoding="utf-8"))
        results[(r["version"], Path(r["model_dir"]).name)] = (r, f.parent)
    return proc, sweep, results
