"""hsbcala.data.resolve: globs are resolved and every line is checked, on copies of real lines damaged on purpose."""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess
import sys
import time
import unicodedata
import zlib
from pathlib import Path

import pytest

from hsbcala.core.errors import DataError
from hsbcala.data import globbing
from hsbcala.data import resolve as data
from hsbcala.data.resolve import GT_SUFFIX, LineSet, check_lines, gt_path, load_lines, resolve
from tests.conftest import need

SHARED = Path(__file__).resolve().parents[2] / "shared"
FRAKTUR = SHARED / "data" / "fraktur19-lines"
UW3 = SHARED / "data" / "uw3-lines"


def _need(path: Path) -> Path:
    return need(path, "shared line data")


def _real_lines(n: int) -> list[Path]:
    """The first n lines (images) of the first fraktur book that has enough of them."""
    for book in sorted(p for p in (_need(FRAKTUR) / "ref_AS").iterdir() if p.is_dir()):
        images = sorted(book.glob("*.png"))
        images = [p for p in images if gt_path(p).is_file()]
        if len(images) >= n:
            return images[:n]
    pytest.fail(f"no book in {FRAKTUR / 'ref_AS'} has {n} lines")


def _copy_lines(images: list[Path], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for image in images:
        shutil.copyfile(image, dest / image.name)
        shutil.copyfile(gt_path(image), gt_path(dest / image.name))
        copies.append(dest / image.name)
    return copies


@pytest.fixture
def lines(tmp_path: Path) -> list[Path]:
    """Five real fraktur lines copied to tmp_path/gt/book (sorted)."""
    return _copy_lines(_real_lines(5), tmp_path / "gt" / "book")


def _gt_text(image: Path) -> str:
    return unicodedata.normalize("NFC", gt_path(image).read_text(encoding="utf-8")).strip()


# --- ways to damage a line -----------------------------------------------------------------------------------


def _png_size(png: Path) -> tuple[int, int]:
    return struct.unpack(">II", png.read_bytes()[16:24])


def _set_png_width(png: Path, width: int) -> None:
    """Patch the IHDR width (with a correct CRC): Pillow cannot save a 0-wide image, so edit a real one."""
    b = bytearray(png.read_bytes())
    assert b[12:16] == b"IHDR"
    b[16:20] = struct.pack(">I", width)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    png.write_bytes(bytes(b))


def _delete_gt(image: Path) -> str:
    gt_path(image).unlink()
    return f"no ground truth file {gt_path(image)}"


def _truncate_png(image: Path) -> str:
    image.write_bytes(image.read_bytes()[:100])
    return "image does not decode"


def _flip_idat_byte(image: Path) -> str:
    b = bytearray(image.read_bytes())
    pos = b.index(b"IDAT") + 4 + 20  # a byte inside the compressed pixels: the chunk CRC no longer matches
    b[pos] ^= 0xFF
    image.write_bytes(bytes(b))
    return "image does not decode"


def _text_as_png(image: Path) -> str:
    image.write_text("not an image\n")
    return "image does not decode"


def _empty_gt(image: Path) -> str:
    gt_path(image).write_bytes(b"")
    return f"empty ground truth file {gt_path(image)}"


def _whitespace_gt(image: Path) -> str:
    gt_path(image).write_bytes(b" \t\n\n")
    return f"whitespace-only ground truth file {gt_path(image)}"


def _latin1_gt(image: Path) -> str:
    gt_path(image).write_bytes(gt_path(image).read_bytes().rstrip(b"\n") + b" \xe4\n")  # latin-1 'ä'
    return f"ground truth file {gt_path(image)} is not valid UTF-8 (byte 0xe4"


def _zero_width(image: Path) -> str:
    _, height = _png_size(image)
    _set_png_width(image, 0)
    return f"image has a zero dimension (0x{height})"


DAMAGES = [
    _delete_gt,
    _truncate_png,
    _flip_idat_byte,
    _text_as_png,
    _empty_gt,
    _whitespace_gt,
    _latin1_gt,
    _zero_width,
]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.lstrip("_"))
def test_damaged_line_is_named_when_not_skipping(lines: list[Path], damage) -> None:
    bad = lines[2]
    expected = damage(bad)
    with pytest.raises(DataError) as info:
        check_lines(lines, key="data.train", skip_invalid=False)
    message = str(info.value)
    assert message.startswith(f"data.train: 1 invalid line; first: {bad}: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.lstrip("_"))
def test_damaged_line_is_skipped_and_reported(lines: list[Path], damage) -> None:
    bad = lines[2]
    expected = damage(bad)
    result = check_lines(lines, key="data.train", skip_invalid=True)
    assert len(result) == 4
    assert bad not in result.images
    assert [image for image, _ in result.skipped] == [bad]
    assert expected in result.skipped[0][1]
    good = [p for p in lines if p != bad]
    assert result.n_chars == sum(len(_gt_text(p)) for p in good)


def test_valid_lines(lines: list[Path]) -> None:
    result = check_lines(list(reversed(lines)) + [lines[0]], key="data.train", skip_invalid=False)
    assert isinstance(result, LineSet)
    assert result.images == tuple(sorted(lines))  # sorted, de-duplicated
    assert all(p.is_absolute() for p in result.images)
    assert result.skipped == ()
    texts = [_gt_text(p) for p in lines]
    assert result.n_chars == sum(len(t) for t in texts)
    assert result.charset == frozenset("".join(texts))


def test_count_of_further_problems(lines: list[Path]) -> None:
    _truncate_png(lines[4])
    _delete_gt(lines[1])
    _empty_gt(lines[3])
    with pytest.raises(DataError) as info:
        check_lines(lines, key="data.val", skip_invalid=False)
    assert str(info.value) == (
        f"data.val: 3 invalid lines; first: {lines[1]}: no ground truth file {gt_path(lines[1])}"
    )
    result = check_lines(lines, key="data.val", skip_invalid=True)
    assert [p for p, _ in result.skipped] == [lines[1], lines[3], lines[4]]
    assert result.images == (lines[0], lines[2])


def test_no_valid_line_left_is_an_error_even_when_skipping(lines: list[Path]) -> None:
    for image in lines:
        _delete_gt(image)
    with pytest.raises(
        DataError, match=r"^data\.train: no valid line: all 5 lines are invalid; first: "
    ) as info:
        check_lines(lines, key="data.train", skip_invalid=True)
    assert str(lines[0]) in str(info.value)


def test_check_images_false_checks_the_gt_only(lines: list[Path]) -> None:
    _truncate_png(lines[0])
    assert len(check_lines(lines, key="data.train", skip_invalid=False, check_images=False)) == 5
    _delete_gt(lines[1])
    with pytest.raises(DataError, match="no ground truth file"):
        check_lines(lines, key="data.train", skip_invalid=False, check_images=False)


def test_bin_png_lines_find_their_gt(tmp_path: Path) -> None:
    images = sorted((_need(UW3) / "train").glob("*.bin.png"))[:3]
    copies = _copy_lines(images, tmp_path / "uw3")
    assert all((tmp_path / "uw3" / (p.name.split(".")[0] + ".gt.txt")).is_file() for p in copies)
    result = check_lines(copies, key="data.train", skip_invalid=False)
    assert len(result) == 3


# --- gt_path -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "gt"),
    [
        ("a/b.png", "a/b.gt.txt"),
        ("a/b.bin.png", "a/b.gt.txt"),
        ("a/b.nrm.png", "a/b.gt.txt"),
        ("/x/010001.bin.png", "/x/010001.gt.txt"),
        ("a/p1.l02.png", "a/p1.gt.txt"),  # Calamari cuts at the FIRST dot of the file name
        ("a.d/b.PNG", "a.d/b.gt.txt"),  # dots in directory names do not count
        ("a/noext", "a/noext.gt.txt"),
    ],
)
def test_gt_path_follows_calamaris_split_all_ext(image: str, gt: str) -> None:
    assert gt_path(Path(image)) == Path(gt)
    assert GT_SUFFIX == ".gt.txt"


# --- resolve -------------------------------------------------------------------------------------------------


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_no_patterns(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve([], key="data.train", base=tmp_path)
    assert str(info.value) == "data.train: no patterns given"


def test_pattern_matching_nothing(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "x.png")
    pattern = str(tmp_path / "a" / "*.png")
    missing = str(tmp_path / "b" / "*.png")
    with pytest.raises(DataError) as info:
        resolve([pattern, missing], key="data.train", base=tmp_path)
    assert str(info.value) == f"data.train: pattern '{missing}' matches no file"


def test_relative_pattern_matching_nothing_names_the_base(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve(["gt/*.png"], key="data.val", base=tmp_path)
    assert str(info.value) == f"data.val: pattern 'gt/*.png' matches no file (relative to {tmp_path})"


def test_pattern_matching_only_non_images(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "x.gt.txt", tmp_path / "a" / "notes.md")
    with pytest.raises(DataError, match=r"^data\.train: pattern '.*/a/\*' matches 2 file\(s\) but no image"):
        resolve([str(tmp_path / "a" / "*")], key="data.train", base=tmp_path)


def test_pattern_matching_only_a_directory(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "x.png")
    with pytest.raises(DataError, match=r"matches only directories.*'a/\*\*/\*\.png'"):
        resolve(["a"], key="data.train", base=tmp_path)


def test_recursive_glob_takes_images_only_sorted_absolute(tmp_path: Path) -> None:
    root = tmp_path / "gt"
    images = [
        root / "top.png",
        root / "b1" / "l1.bin.png",
        root / "b1" / "deep" / "l2.TIF",
        root / "b2" / "l3.jpeg",
        root / "b2" / "l4.BMP",
    ]
    _touch(*images, root / "b1" / "l1.gt.txt", root / "b2" / "readme.txt")
    found = resolve([str(root / "**" / "*")], key="data.train", base=tmp_path)
    assert found == tuple(sorted(images))
    assert resolve([str(root / "**" / "*.png")], key="data.train", base=tmp_path) == (
        root / "b1" / "l1.bin.png",
        root / "top.png",
    )


def test_relative_patterns_use_base_and_are_deduplicated(tmp_path: Path, monkeypatch) -> None:
    base = tmp_path / "run[1]"  # glob characters in the base dir are literal
    _touch(base / "gt" / "a.png", base / "gt" / "b.png", tmp_path / "elsewhere" / "c.png")
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative patterns must not depend on the working dir
    found = resolve(["gt/*.png", "gt/a.png", "gt/../gt/a.png"], key="data.train", base=base)
    assert found == (base / "gt" / "a.png", base / "gt" / "b.png")


def test_real_recursive_glob() -> None:
    book_dirs = [p for p in (_need(FRAKTUR) / "ref_BA").iterdir() if p.is_dir()]
    expected = sum(len(list(d.glob("*.png"))) for d in book_dirs)
    found = resolve(["ref_BA/**/*.png"], key="data.val", base=FRAKTUR)
    assert len(found) == expected > 0
    assert all(p.is_relative_to(FRAKTUR / "ref_BA") for p in found)


# --- symbolic links: loops, aliases, duplicates ---------------------------------------------------------------


def test_symlink_loop_under_double_star_is_not_followed(lines: list[Path], capsys) -> None:
    # glob's '**' follows book/up -> gt until the path is too long: every line 41 times (the report)
    (lines[0].parent / "up").symlink_to(lines[0].parent.parent)
    found = resolve(["gt/**/*.png"], key="data.train", base=lines[0].parents[2])
    assert found == tuple(lines)
    err = capsys.readouterr().err
    assert err.count("symbolic link loop") == 1
    assert (
        f"{lines[0].parent}/up -> {lines[0].parent.parent} (a directory containing it): not followed" in err
    )


def test_two_symlink_loops_end(tmp_path: Path, lines: list[Path]) -> None:
    # two links back up make glob's '**' branch 2^40 ways (it never ends): a child process with a deadline
    book = lines[0].parent
    (book / "a").symlink_to(book)
    (book / "b").symlink_to("..")
    code = (
        "import sys; from hsbcala.data.resolve import resolve; "
        "print(len(resolve(['gt/**/*.png'], key='data.train', base=sys.argv[1])))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parents[1],
        )
    except subprocess.TimeoutExpired:
        pytest.fail("resolving a data set with two symbolic link loops did not end")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "5" and proc.stderr.count("symbolic link loop") == 2


def test_linked_directory_and_linked_files_are_used_once(tmp_path: Path, lines: list[Path], capsys) -> None:
    gt = lines[0].parents[1]
    (gt / "alias").symlink_to(gt / "book")  # a second name for the book
    found = resolve(["gt/**/*.png"], key="data.train", base=tmp_path)
    assert found == tuple(lines)  # named by the real directory, not through the link
    assert "1 link(s) to directories already included not followed" in capsys.readouterr().err
    # the same lines through two patterns, one of them through the link
    found = resolve(["gt/alias/*.png", "gt/book/*.png"], key="data.train", base=tmp_path)
    assert found == tuple(lines)
    assert "5 path(s) name a line already matched under another name" in capsys.readouterr().err
    # a symbolic link to an image (with its GT linked too) is the same line
    (gt / "book" / "zz.png").symlink_to(lines[2])
    (gt / "book" / "zz.gt.txt").symlink_to(gt_path(lines[2]))
    assert resolve(["gt/book/*.png"], key="data.train", base=tmp_path) == tuple(lines)
    # ... but a link to an image with a GT of its own is another line (another transcription of it)
    (gt / "book" / "zz.gt.txt").unlink()
    (gt / "book" / "zz.gt.txt").write_text("other\n", encoding="utf-8")
    assert len(resolve(["gt/book/*.png"], key="data.train", base=tmp_path)) == 6


def test_double_star_matches_what_glob_matches(tmp_path: Path) -> None:
    # without links, hsbcala's '**' gives exactly glob.glob(..., recursive=True): hidden names, a final '**'
    root = tmp_path / "gt"
    _touch(
        root / "a.png",
        root / "b" / "c.png",
        root / "b" / ".hidden.png",
        root / ".h" / "d.png",
        root / "b" / "e" / "f.png",
        root / "b" / "e" / "g.txt",
    )
    for pattern in ("**/*.png", "**/.*.png", "b/**/*", "**", "*/**/*.png", "**/e/*"):
        full = os.path.join(glob.escape(str(root)), pattern)
        expected = {p.rstrip(os.sep) for p in glob.glob(full, recursive=True)}
        assert set(globbing._glob(full)[0]) == expected, pattern


# --- load_lines ----------------------------------------------------------------------------------------------


@pytest.fixture
def split(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    images = _real_lines(6)
    return _copy_lines(images[:4], tmp_path / "train"), _copy_lines(images[4:], tmp_path / "val")


def test_load_lines(tmp_path: Path, split) -> None:
    train, val = load_lines(
        ["train/*.png"], [str(tmp_path / "val" / "*.png")], base=tmp_path, skip_invalid=False
    )
    assert train.images == tuple(split[0])
    assert val.images == tuple(split[1])


def test_load_lines_names_the_glob_and_key(tmp_path: Path, split) -> None:
    with pytest.raises(DataError, match=r"^data\.val: pattern 'nothing/\*\.png' matches no file"):
        load_lines(["train/*.png"], ["nothing/*.png"], base=tmp_path, skip_invalid=True)
    _delete_gt(split[1][0])
    with pytest.raises(DataError) as info:
        load_lines(["train/*.png"], ["val/*.png"], base=tmp_path, skip_invalid=False)
    assert str(info.value).startswith(f"data.val: 1 invalid line; first: {split[1][0]}: no ground truth file")


def test_train_val_overlap(tmp_path: Path, split) -> None:
    shared = split[0][1]
    with pytest.raises(DataError) as info:
        load_lines(["train/*.png"], ["val/*.png", "train/" + shared.name], base=tmp_path, skip_invalid=True)
    assert str(info.value) == f"data.val: {shared} is also in data.train; validation lines must be held out"


def test_train_val_overlap_through_a_symlink(tmp_path: Path, split) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "train")
    with pytest.raises(DataError, match=r"^data\.val: .*/link/.* is also in data\.train \(as .*/train/"):
        load_lines(["train/*.png"], ["link/*.png"], base=tmp_path, skip_invalid=True)


def test_train_val_overlap_through_a_hard_link(tmp_path: Path, split) -> None:
    linked = tmp_path / "val" / "hardlinked.png"
    os.link(split[0][3], linked)
    shutil.copyfile(gt_path(split[0][3]), gt_path(linked))
    with pytest.raises(DataError) as info:
        load_lines(["train/*.png"], ["val/*.png"], base=tmp_path, skip_invalid=True)
    assert str(info.value) == (
        f"data.val: {linked} is also in data.train (as {split[0][3]}); validation lines must be held out"
    )


def test_train_val_overlap_through_the_same_gt(tmp_path: Path, split) -> None:
    line = split[0][0]
    other = line.with_name(line.name.split(".")[0] + ".nrm.png")  # another image of the same line
    shutil.move(line, other)
    line_bin = line.with_name(line.name.split(".")[0] + ".bin.png")
    shutil.copyfile(other, line_bin)
    with pytest.raises(DataError) as info:
        load_lines(["train/*.bin.png"], ["val/*.png", "train/*.nrm.png"], base=tmp_path, skip_invalid=True)
    assert str(info.value) == (
        f"data.val: {other} has the same ground truth {gt_path(other)} as {line_bin} "
        f"in data.train; validation lines must be held out"
    )


# --- speed: a printed figure, no assertion ------------------------------------------------------------------


def test_print_time_to_check_5000_real_lines(capsys) -> None:
    images = resolve(["**/*.png"], key="data.train", base=_need(FRAKTUR))[:5000]
    t0 = time.perf_counter()
    result = check_lines(images, key="data.train", skip_invalid=True)
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\n[timing] hsbcala.data.resolve.check_lines: {len(images)} real lines in {seconds:.2f} s "
            f"({len(result)} valid, {len(result.skipped)} skipped, {len(result.charset)} characters)"
        )
    assert len(result) + len(result.skipped) == len(images)
    assert data.IMAGE_SUFFIXES  # the module's public suffix list is what resolve() takes
