"""hsbcala.data.synth: real rendering with the Debian fonts (fonts-ebgaramond, fonts-blankenburg), no mocks."""

from __future__ import annotations

import hashlib
import pathlib
import unicodedata

import pytest
from PIL import Image

from hsbcala.core.errors import ConfigError, DataError
from hsbcala.data import synth
from tests.conftest import missing, need

SHARED = pathlib.Path(__file__).parents[1].parent / "shared"
SENTENCES = SHARED / "data" / "hsb-text" / "hsb_ud_sentences.txt"
LETTERS = "ěčćřšžźłńó"
SMALL = {"n_train": 24, "n_val": 6, "seed": 7}


def _need_fonts() -> None:
    try:
        for face in synth.FACES:
            synth.font_path(face)
    except DataError as exc:
        missing(str(exc))


def _shared_sentences() -> pathlib.Path:
    return need(SENTENCES, "the Upper Sorbian sentences")


def _pairs(d: pathlib.Path) -> list[tuple[pathlib.Path, pathlib.Path]]:
    pngs = sorted(d.glob("*/*.png"))  # <split>/<page>/<line>.png
    return [(p, p.with_name(p.name[: -len(".png")] + ".gt.txt")) for p in pngs]


def _check_set(train: pathlib.Path, val: pathlib.Path, n_train: int, n_val: int) -> str:
    """Every image decodes, is binarised-looking and in range; every GT is NFC, one line. Returns all GT."""
    texts: dict[str, set[str]] = {}
    for d, n in ((train, n_train), (val, n_val)):
        pairs = _pairs(d)
        assert len(pairs) == n
        assert len(list(d.glob("*/*.gt.txt"))) == n
        texts[d.name] = set()
        for png, gt in pairs:
            with Image.open(png) as im:
                im.load()
                assert im.format == "PNG" and im.mode == "L"
                assert synth.MIN_HEIGHT <= im.height <= synth.MAX_HEIGHT, (png, im.size)
                assert im.width > 2 * im.height
                lo, hi = im.getextrema()
                assert (lo, hi) == (0, 255)
                hist = im.histogram()
                assert hist[0] + hist[255] == im.width * im.height  # only black and white
                assert hist[0] < hist[255]  # black text on white
            raw = gt.read_bytes()
            text = raw.decode("utf-8")
            assert text == unicodedata.normalize("NFC", text)
            assert "\n" not in text and text == text.strip()
            assert synth.MIN_CHARS <= len(text) <= synth.MAX_CHARS
            assert set(text) <= synth.CHARSET
            texts[d.name].add(text)
        assert len(texts[d.name]) == n  # no duplicate lines within a split
    assert not texts["train"] & texts["val"], "train and val share line texts"
    return "".join(texts["train"] | texts["val"])


def _digests(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (p.suffix == ".png" or p.name.endswith(".gt.txt"))
    }


@pytest.mark.parametrize("face", synth.FACES)
def test_builtin_set_has_all_sorbian_letters(tmp_path: pathlib.Path, face: str) -> None:
    _need_fonts()
    train, val = synth.ensure_synthetic(tmp_path, face)  # defaults: 400 + 60 lines, built-in phrases
    assert (train, val) == (tmp_path / face / "train", tmp_path / face / "val")
    alltext = _check_set(train, val, 400, 60)
    missing = [c for c in LETTERS + LETTERS.upper() if c not in alltext]
    assert not missing, f"letters never rendered: {missing}"


@pytest.mark.parametrize("face", synth.FACES)
def test_shared_sentences(tmp_path: pathlib.Path, face: str) -> None:
    _need_fonts()
    sentences = _shared_sentences()
    train, val = synth.ensure_synthetic(tmp_path, face, text_file=sentences)
    alltext = _check_set(train, val, 400, 60)
    assert [c for c in LETTERS if c not in alltext] == []
    # the lines come from the file, not from the built-in phrases
    corpus = unicodedata.normalize("NFC", sentences.read_text(encoding="utf-8"))
    for _, gt in _pairs(train)[:50]:
        words = gt.read_text(encoding="utf-8").split()
        assert " ".join(words) in " ".join(corpus.split())


def test_idempotent_and_rebuilt_on_change(tmp_path: pathlib.Path) -> None:
    _need_fonts()
    train, val = synth.ensure_synthetic(tmp_path, "fraktur", **SMALL)
    files = sorted(p for p in (tmp_path / "fraktur").rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    assert synth.ensure_synthetic(tmp_path, "fraktur", **SMALL) == (train, val)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in (tmp_path / "fraktur").rglob("*") if p.is_file()) == files

    # different parameters: rebuilt in a temporary directory and swapped in, nothing left behind
    synth.ensure_synthetic(tmp_path, "fraktur", n_train=10, n_val=4, seed=7)
    _check_set(train, val, 10, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fraktur.lock", "fraktur"]

    # a damaged set (a file deleted) is rebuilt too
    next(train.glob("*/*.png")).unlink()
    synth.ensure_synthetic(tmp_path, "fraktur", n_train=10, n_val=4, seed=7)
    _check_set(train, val, 10, 4)


def test_lines_are_pages_of_a_book_as_real_gt_is_books_of_lines(tmp_path: pathlib.Path) -> None:
    """A folder a page (a document, like a book's folder in real GT), PAGE_LINES lines each; the validation pages
    go on after the training pages, so no document is on both sides; each line keeps the pixels and text it had in
    the flat layout (generator 1), only its folder is new."""
    _need_fonts()
    train, val = synth.ensure_synthetic(tmp_path, "fraktur", n_train=25, n_val=12, seed=7)
    pages = {d: sorted(p.name for p in d.iterdir()) for d in (train, val)}
    assert pages[train] == ["page-001", "page-002", "page-003"] and pages[val] == ["page-004", "page-005"]
    sizes = [len(list((train / p).glob("*.png"))) for p in pages[train]]
    assert sizes == [synth.PAGE_LINES, synth.PAGE_LINES, 5]
    assert (train / "page-001" / "hsb_fraktur_train_00000.png").is_file()
    assert (train / "page-003" / "hsb_fraktur_train_00024.png").is_file()
    assert (val / "page-005" / "hsb_fraktur_val_00011.png").is_file()
    assert all(synth.is_synthetic(png) for png, _ in _pairs(train) + _pairs(val))
    assert not synth.is_synthetic(tmp_path / "elsewhere" / "a" / "b" / "x.png")
    _, val_lines = synth.make_lines(synth._load_sentences(None)[0], 25, 12, 7)
    png = val / "page-005" / "hsb_fraktur_val_00011.png"
    with Image.open(png) as im:
        again = synth.render_line(val_lines[11], "fraktur", seed=7 * 1_000_003 + 500_000 + 11)
        assert im.tobytes() == again.tobytes()
    assert png.with_name("hsb_fraktur_val_00011.gt.txt").read_text(encoding="utf-8") == val_lines[11]


def test_interrupted_leftovers_are_cleaned(tmp_path: pathlib.Path) -> None:
    _need_fonts()
    stale = tmp_path / ".antiqua.tmp-dead"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "half.png").write_bytes(b"")
    train, val = synth.ensure_synthetic(tmp_path, "antiqua", **SMALL)
    assert not stale.exists()
    _check_set(train, val, SMALL["n_train"], SMALL["n_val"])


@pytest.mark.parametrize("face", synth.FACES)
def test_deterministic(tmp_path: pathlib.Path, face: str) -> None:
    _need_fonts()
    synth.ensure_synthetic(tmp_path / "a", face, **SMALL)
    synth.ensure_synthetic(tmp_path / "b", face, **SMALL)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a and a == b
    synth.ensure_synthetic(tmp_path / "c", face, **{**SMALL, "seed": 8})
    assert _digests(tmp_path / "c") != a

    text = "Ćah přijědźe z Drježdźan do Budyšina."
    one, two = synth.render_line(text, face, seed=3), synth.render_line(text, face, seed=3)
    assert one.tobytes() == two.tobytes() and one.size == two.size
    assert synth.render_line(text, face, seed=4).tobytes() != one.tobytes()


@pytest.mark.parametrize("face", synth.FACES)
def test_render_line_every_letter(face: str) -> None:
    _need_fonts()
    for text in ("ěčćřšžźłńó dź ĚČĆŘŠŽŹŁŃÓ DŹ", "Serbske Budyšin, Łužica."):
        im = synth.render_line(text, face, seed=1)
        assert im.mode == "L" and synth.MIN_HEIGHT <= im.height <= synth.MAX_HEIGHT
        assert im.getextrema() == (0, 255)


def test_fraktur_composes_missing_letters() -> None:
    """A composed letter differs from its base letter: the mark or stroke is really drawn."""
    _need_fonts()
    font = synth._font("fraktur", 80)
    for composed, (base, _) in synth._FRAKTUR_COMPOSED.items():
        imgs = []
        for ch in (composed, base):
            im = Image.new("L", (200, 240), 255)
            synth._draw_fraktur(im, 40, 160, ch, font, "fraktur")
            imgs.append(im)
        ink = [im.histogram()[0] for im in imgs]
        assert ink[0] > ink[1] + 20, f"{composed!r} looks like {base!r}"


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="textura"):
        synth.render_line("Serbske Budyšin", "textura")
    _need_fonts()
    with pytest.raises(DataError, match="CHARSET"):
        synth.render_line("Μεσοποταμία abc", "antiqua")


def test_missing_font_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = synth._SPECS["fraktur"]
    missing = synth._Spec(spec.family, "NoSuchFraktur-Regular.ttf", spec.package, ["/nonexistent"])
    monkeypatch.setitem(synth._SPECS, "fraktur", missing)
    synth.font_path.cache_clear()
    try:
        with pytest.raises(DataError) as err:
            synth.ensure_synthetic(pathlib.Path("/nonexistent/hsbcala-synth"), "fraktur")
        msg = str(err.value)
        assert "\n" not in msg
        assert "NoSuchFraktur-Regular.ttf" in msg and "apt-get install fonts-blankenburg" in msg
    finally:
        synth.font_path.cache_clear()


def test_lines_split_and_cut() -> None:
    sentences = [
        "Mezopotamiska (grjeksce: Μεσοποταμία Mesopotamia) woznamjenja kraj mjez dwěmaj rěkomaj.",
        *synth.BUILTIN_PHRASES,
    ]
    train, val = synth.make_lines(sentences, 50, 10, seed=1)
    assert len(train) == 50 and len(val) == 10 and not set(train) & set(val)
    for line in train + val:
        assert synth.MIN_CHARS <= len(line) <= synth.MAX_CHARS
        assert "Μ" not in line
    assert synth.make_lines(sentences, 50, 10, seed=1) == (train, val)


def test_cli(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need_fonts()
    assert synth.main([str(tmp_path), "--face", "fraktur", "--n-train", "5", "--n-val", "2"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "fraktur" / "train") in out
    _check_set(tmp_path / "fraktur" / "train", tmp_path / "fraktur" / "val", 5, 2)


def test_missing_text_file_falls_back_to_builtin(tmp_path: pathlib.Path) -> None:
    _need_fonts()
    with pytest.warns(UserWarning, match="built-in phrases"):
        train, val = synth.ensure_synthetic(tmp_path, "antiqua", **SMALL, text_file=tmp_path / "nope.txt")
    builtin = " ".join(" ".join(synth.BUILTIN_PHRASES).split())
    gts = [gt.read_text(encoding="utf-8") for _, gt in _pairs(train) + _pairs(val)]
    assert all(set(g.split()) <= set(builtin.split()) for g in gts)
