"""An evaluation set of other books (``eval.data`` globs, lines the model's manifest does not know) resamples
books for its interval, one document per directory as the training split cuts them (issue 20): real lines of
four ../shared directories, no engine."""

from __future__ import annotations

from pathlib import Path

from hsbcala.data import split
from hsbcala.evaluate import scoring
from hsbcala.evaluate import sets as evalsets
from tests.gt_helpers import books


def _other_books(tmp: Path, n_dirs: int) -> evalsets.EvalSet:
    dirs = (books("ref_AS")[:2] + books("ref_BA")[:2])[:n_dirs]
    patterns = [f"{d}/*.png" for d in dirs]
    return evalsets.load_set("other", "eval.data", patterns, {}, base=tmp, skip_invalid=True)


def _recorded(tmp: Path) -> dict[Path, str]:
    """A model's manifest: its own lines, none of the evaluated ones."""
    return {tmp / "train" / f"{i}.png": "train" for i in range(3)}


def test_other_books_resample_one_document_per_directory_as_the_split(tmp_path):
    s = _other_books(tmp_path, 4)
    assert evalsets.assign_documents(s, _recorded(tmp_path), "auto") is None
    _, expected = split.documents_of(s.images, by="directory", pattern=None)
    assert s.documents == expected
    assert len(set(expected.values())) == 4 and {d.split("/")[0] for d in expected.values()} == {
        "ref_AS",
        "ref_BA",
    }
    assert s.unit_note == "4 documents (by directory, as data.split cuts them)"
    # one book read badly, the others well: the interval resamples the 4 books, not the ~200 lines
    bad = next(iter(s.images)).parent
    predictions = {img: (s.gt[img][1:] if img.parent == bad else s.gt[img]) for img in s.images}
    result = scoring.score_sets([s], {}, "calamari2", predictions, tmp_path / "out")
    iv = result["sets"][0]["overall"]["interval"]
    assert (iv["unit"], iv["n_units"]) == ("documents", 4)
    assert result["sets"][0]["interval_unit"] == s.unit_note


def test_one_directory_resamples_lines_and_lines_stay_lines_when_asked(tmp_path):
    s = _other_books(tmp_path, 1)
    evalsets.assign_documents(s, _recorded(tmp_path), "auto")
    assert s.documents is None and s.unit_note == "lines (1 document: too few to resample)"
    s = _other_books(tmp_path, 3)
    evalsets.assign_documents(s, _recorded(tmp_path), "lines")
    assert s.documents is None and s.unit_note == "lines"


def test_lines_named_without_variants_are_evaluated_without_groups(tmp_path):
    """../shared's books carry no variant in their file names: the default groups are left out with one plain
    line (the reference benchmark printed three warnings and n/a columns for them). Where some line is named
    as a variant, a group that matches none stays a warning."""
    groups = {"binarized": ["*_GTOLENA*", "*_GTSBB*"], "raw": ["*_GTPAGE*"]}
    dirs = books("ref_AS")[:2]
    s = evalsets.load_set(
        "other", "eval.data", [f"{d}/*.png" for d in dirs], groups, base=tmp_path, skip_invalid=True
    )
    kept, note = evalsets.without_variants([s], groups)
    assert kept == {} and "binarized, raw: no line is named as a variant" in note
    assert evalsets.warnings_of(s, kept, only_set=True) == []
    # one line named as a binarized variant: the naming is used, and the missing raw variant is worth a warning
    variant = tmp_path / "v"
    variant.mkdir()
    png = min(dirs[0].glob("*.png"))
    (variant / f"{png.stem}_GTSBB.png").write_bytes(png.read_bytes())
    (variant / f"{png.stem}_GTSBB.gt.txt").write_text(png.with_suffix(".gt.txt").read_text(encoding="utf-8"))
    s = evalsets.load_set("v", "eval.data", [f"{variant}/*.png"], groups, base=tmp_path, skip_invalid=True)
    kept, note = evalsets.without_variants([s], groups)
    assert kept == groups and note is None
    assert any(
        "eval.groups.raw: no line matches *_GTPAGE*" in w
        for w in evalsets.warnings_of(s, kept, only_set=True)
    )
