"""Pair and content checks (hsbcala.data.checks through hsbcala.data.step) on copies of real Fraktur lines damaged on
purpose: each check names the right file, and its configured action (fail, warn, drop) happens."""

from __future__ import annotations

import json
import os
import threading
import unicodedata
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from PIL import Image

from hsbcala.core.errors import ConfigError, DataError
from tests.conftest import Result, run_inprocess
from tests.gt_helpers import books, composed_line, copy_book, gt_of, prepare, text


@pytest.fixture
def lines(tmp_path) -> tuple[list[Path], list[Path]]:
    b = books()
    train = copy_book(b[0], tmp_path / "train", 6)
    val = copy_book(b[1], tmp_path / "val", 4)
    return train, val


def error_of(tmp: Path, *overrides: str) -> str:
    with pytest.raises(DataError) as info:
        prepare(tmp, *overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------- the damages, one by one


def test_clean_lines_pass(tmp_path, lines):
    dp = prepare(tmp_path)
    assert (dp.n_train, dp.n_val, dp.skipped) == (6, 4, 0)
    assert all(not f.items for f in dp.outcome.findings.values())
    # nothing dropped, no '**': Calamari gets the patterns themselves, as before
    assert dp.engine_train == (f"{tmp_path}/train/*.png",)
    assert dp.manifest["status"] == "passed" and dp.manifest["totals"]["lines"] == 10
    assert not (tmp_path / "model").exists()  # the data step writes nothing


def test_deleted_gt_fails_by_default_and_can_be_dropped(tmp_path, lines):
    train, _ = lines
    gt_of(train[2]).unlink()
    message = error_of(tmp_path)
    assert message.startswith(
        f"data.train: 1 × image without .gt.txt (data.checks.missing_gt=fail); "
        f"first: {train[2]}: no ground truth file {gt_of(train[2])}"
    )
    dp = prepare(tmp_path, "data.checks.missing_gt=drop")
    assert dp.n_train == 5 and dp.skipped == 1
    assert str(train[2]) not in dp.engine_train and len(dp.engine_train) == 5  # a file list now
    assert dp.manifest["dropped"] == [{"image": str(train[2]), "check": "missing_gt"}]
    assert str(train[2]) not in {r["image"] for r in dp.manifest["lines"]}


def test_truncated_png_fails_by_default_and_can_be_dropped(tmp_path, lines):
    _, val = lines
    val[1].write_bytes(val[1].read_bytes()[:200])
    message = error_of(tmp_path)
    assert message.startswith(
        f"data.val: 1 × image does not decode / zero dimension "
        f"(data.checks.bad_image=fail); first: {val[1]}: image does not decode"
    )
    dp = prepare(tmp_path, "data.checks.bad_image=drop")
    assert dp.n_val == 3 and str(val[1]) not in dp.engine_val
    assert dp.outcome.findings["bad_image"].items[0][0] == val[1]


def test_nfd_gt_is_reported_as_mixed_normalization(tmp_path, lines):
    train, _ = lines
    bad = composed_line(train)
    gt_of(bad).write_text(unicodedata.normalize("NFD", text(bad)) + "\n", encoding="utf-8")
    dp = prepare(tmp_path)  # default: warn, the line stays
    finding = dp.outcome.findings["mixed_normalization"]
    assert finding.action == "warn" and [p for p, _, _ in finding.items] == [bad]
    assert "is not in NFC" in finding.items[0][1]
    assert dp.n_train == 6
    assert dp.manifest["checks"]["mixed_normalization"]["first"][0]["path"] == str(bad)
    dropped = prepare(tmp_path, "data.checks.mixed_normalization=drop")
    assert dropped.n_train == 5 and [line.image for line, _ in dropped.outcome.dropped] == [bad]
    assert str(bad) in error_of(tmp_path, "data.checks.mixed_normalization=fail")


def test_all_nfd_is_not_mixed(tmp_path, lines):
    for image in lines[0] + lines[1]:
        gt_of(image).write_text(unicodedata.normalize("NFD", text(image)), encoding="utf-8")
    assert not prepare(tmp_path).outcome.findings["mixed_normalization"].items


def test_empty_gt_is_dropped_by_default_and_fails_without_skip_invalid(tmp_path, lines):
    train, _ = lines
    gt_of(train[0]).write_bytes(b"")
    gt_of(train[4]).write_bytes(b"  \n")
    dp = prepare(tmp_path)
    assert dp.n_train == 4 and dp.skipped == 2
    assert [(str(p), r) for p, r, _ in dp.outcome.findings["empty_gt"].items] == [
        (str(train[0]), f"empty ground truth file {gt_of(train[0])}"),
        (str(train[4]), f"whitespace-only ground truth file {gt_of(train[4])}"),
    ]
    # train.skip_invalid=false: every drop becomes a fail
    message = error_of(tmp_path, "train.skip_invalid=false")
    assert message.startswith(
        f"data.train: 2 × empty or whitespace-only GT (data.checks.empty_gt=fail with "
        f"train.skip_invalid=false); first: {train[0]}"
    )


def test_gt_without_image(tmp_path, lines):
    train, _ = lines
    train[3].unlink()
    message = error_of(tmp_path)
    assert f"first: {gt_of(train[3])}: " in message and "data.checks.missing_image=fail" in message
    dp = prepare(tmp_path, "data.checks.missing_image=warn")
    assert dp.n_train == 5 and dp.outcome.findings["missing_image"].items[0][0] == gt_of(train[3])


def test_gt_without_image_dropped(tmp_path, lines):
    """missing_image=drop (as a user reaches for it with ref_AS's orphan): the .gt.txt is left out, counted on the
    console, in the manifest and in skipped_lines; train.skip_invalid=false refuses it like every drop."""
    train, _ = lines
    train[3].unlink()
    dp = prepare(tmp_path, "data.checks.missing_image=drop")
    assert dp.n_train == 5 and dp.skipped == 1
    said: list[str] = []
    dp.announce(said.append)
    assert ", 1 dropped, " in said[0]
    assert said[1].startswith(
        f"dropped data.train: 1 × .gt.txt without image (data.checks.missing_image=drop); first: {gt_of(train[3])}: "
    ), said
    assert dp.manifest["totals"]["dropped"] == 1
    assert dp.manifest["dropped"] == [{"gt": str(gt_of(train[3])), "check": "missing_image"}]
    assert dp.manifest["checks"]["missing_image"]["action"] == "drop"
    message = error_of(tmp_path, "data.checks.missing_image=drop", "train.skip_invalid=false")
    assert "data.checks.missing_image=fail with train.skip_invalid=false" in message


def test_gt_not_utf8(tmp_path, lines):
    _, val = lines
    gt_of(val[0]).write_bytes(text(val[0]).encode("utf-8") + b" \xe4")
    message = error_of(tmp_path)
    assert f"first: {val[0]}: ground truth file {gt_of(val[0])} is not valid UTF-8" in message
    assert prepare(tmp_path, "data.checks.bad_encoding=drop").n_val == 3


def test_multi_line_gt(tmp_path, lines):
    train, _ = lines
    gt_of(train[1]).write_text(text(train[1]) + "\nsecond line\n", encoding="utf-8")
    dp = prepare(tmp_path)
    assert [p for p, _, _ in dp.outcome.findings["multi_line"].items] == [train[1]] and dp.n_train == 6
    assert "has 2 lines of text" in error_of(tmp_path, "data.checks.multi_line=fail")


def test_too_narrow_image(tmp_path, lines):
    train, _ = lines
    with Image.open(train[5]) as im:
        im.load()
        narrow = im.crop((0, 0, 12, im.height))
    narrow.save(train[5])
    dp = prepare(tmp_path)
    items = dp.outcome.findings["too_narrow"].items
    assert [p for p, _, _ in items] == [train[5]] and "px per character at line height 48" in items[0][1]
    assert prepare(tmp_path, "data.checks.too_narrow=drop").n_train == 5
    assert not prepare(tmp_path, "data.min_px_per_char=0").outcome.findings["too_narrow"].items


def test_too_wide_line_is_dropped_by_default(tmp_path, lines):
    # Calamari 2 drops a line wider than 4096 px once scaled to height 48 and padded 2 x 16 px: an 8000-px-wide
    # line of height 48 (as in the issue) and one exactly 1 px over the limit; one exactly at it is kept
    train, val = lines
    with Image.open(train[5]) as im:
        im.convert("L").resize((8000, 48)).save(train[5])
    with Image.open(train[4]) as im:
        im.convert("L").resize((4065, 48)).save(train[4])  # 4065 + 32 = 4097 > 4096
    with Image.open(val[0]) as im:
        im.convert("L").resize((4064, 48)).save(val[0])  # 4064 + 32 = 4096: Calamari keeps it
    dp = prepare(tmp_path)
    items = dp.outcome.findings["too_wide"].items
    assert [p for p, _, _ in items] == [train[4], train[5]]
    assert "8032 px wide at line height 48" in items[1][1] and "data.max_line_width=4096" in items[1][1]
    assert dp.n_train == 4 and dp.n_val == 4
    assert {(line.image, check) for line, check in dp.outcome.dropped} == {
        (train[4], "too_wide"),
        (train[5], "too_wide"),
    }
    assert str(train[5]) not in dp.engine_train and str(train[0]) in dp.engine_train  # the checked files
    assert {"image": str(train[5]), "check": "too_wide"} in dp.manifest["dropped"]
    message = error_of(tmp_path, "data.checks.too_wide=fail")
    assert message.startswith(
        "data.train: 2 × line wider than the engine's limit (data.checks.too_wide=fail)"
    )
    assert str(train[4]) in message
    assert "data.checks.too_wide=fail with train.skip_invalid=false" in error_of(
        tmp_path, "train.skip_invalid=false"
    )
    kept = prepare(tmp_path, "data.checks.too_wide=warn")
    assert kept.n_train == 6 and len(kept.outcome.findings["too_wide"].items) == 2
    assert not prepare(tmp_path, "data.max_line_width=0").outcome.findings["too_wide"].items


def test_one_pixel_image_is_dropped_by_default(tmp_path, lines):
    # 1x1 px with a one-character GT: wide enough for CTC (Calamari scales it to a 48x48 blank and trains on
    # it), so only the minimum size finds it
    train, _ = lines
    Image.new("L", (1, 1), 255).save(train[0])
    gt_of(train[0]).write_text("a\n", encoding="utf-8")
    Image.new("L", (120, 7), 255).save(train[1])  # 7 px high: under data.min_image_px=8 too
    dp = prepare(tmp_path)
    items = dp.outcome.findings["too_small"].items
    assert [p for p, _, _ in items] == [train[0], train[1]]
    assert items[0][1].startswith("image is 1x1 px, under data.min_image_px=8")
    assert not dp.outcome.findings["too_narrow"].items
    assert dp.n_train == 4 and str(train[0]) not in dp.engine_train
    assert [r["check"] for r in dp.manifest["dropped"]] == ["too_small", "too_small"]
    assert "data.checks.too_small=fail" in error_of(tmp_path, "data.checks.too_small=fail")
    assert prepare(tmp_path, "data.min_image_px=0").n_train == 6


def test_too_few_time_steps_for_ctc_is_too_narrow(tmp_path, lines):
    # 200x48 px is 5 px per character for 40 dots (passes data.min_px_per_char=4), but CTC needs a blank
    # between repeated labels: 40 + 39 = 79 labels > (200 + 32) // 4 = 58 time steps, so the engines drop it
    train, _ = lines
    Image.new("L", (200, 48), 255).save(train[2])
    gt_of(train[2]).write_text("." * 40, encoding="utf-8")
    items = prepare(tmp_path).outcome.findings["too_narrow"].items
    assert [p for p, _, _ in items] == [train[2]]
    assert "79 CTC labels > 58 time steps" in items[0][1]


def test_a_directory_matched_by_the_glob_is_not_handed_to_the_engine(tmp_path, lines):
    # Calamari's own glob of 'train/*.png' would include the directory zz.png (and with 'train/*' the .gt.txt
    # files): the engine then gets the checked files, not the pattern
    train, _ = lines
    (tmp_path / "train" / "zz.png").mkdir()
    dp = prepare(tmp_path)
    assert dp.n_train == 6 and sorted(dp.engine_train) == sorted(map(str, train))
    assert all(Path(p).is_file() for p in dp.engine_train)
    assert dp.engine_val == (f"{tmp_path}/val/*.png",)  # an exact pattern stays a pattern
    dry = prepare(tmp_path, "dry_run=true")  # the dry run prints what training would run
    assert sorted(dry.engine_train) == sorted(map(str, train)) and dry.engine_val == dp.engine_val
    everything = prepare(tmp_path, f"data.train=[{tmp_path}/train/*]")
    assert sorted(everything.engine_train) == sorted(map(str, train))


def test_symbolic_link_loop_in_the_data_is_used_once(tmp_path, lines, capsys):
    train, _ = lines
    (tmp_path / "train" / "loop").symlink_to(tmp_path / "train")
    dp = prepare(tmp_path, f"data.train=[{tmp_path}/train/**/*.png]")
    assert dp.n_train == 6 and sorted(dp.engine_train) == sorted(map(str, train))
    err = capsys.readouterr().err
    assert err.count("symbolic link loop") == 1 and f"{tmp_path}/train/loop -> {tmp_path}/train" in err


def test_huge_and_special_files_are_not_read(tmp_path, lines):
    # a sparse 129 MiB "image" (no disk used) would be read whole into memory; a FIFO would block the read
    train, _ = lines
    train[0].unlink()
    with open(train[0], "wb") as f:
        f.truncate(129 << 20)
    gt_of(train[1]).unlink()
    with open(gt_of(train[1]), "wb") as f:
        f.truncate(2 << 20)
    train[2].unlink()
    os.mkfifo(train[2])
    result: dict = {}

    def run():
        result["dp"] = prepare(tmp_path, "data.checks.bad_image=drop", "data.checks.missing_gt=drop")

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # blocked on the FIFO: unblock it, then fail
        os.close(os.open(train[2], os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("the data step blocked reading a FIFO")
    bad = {p: r for p, r, _ in result["dp"].outcome.findings["bad_image"].items}
    assert "over the 134,217,728 a line image can be (not read)" in bad[train[0]]
    assert bad[train[2]] == "not a regular file"
    missing = result["dp"].outcome.findings["missing_gt"].items
    assert [p for p, _, _ in missing] == [train[1]] and "not a line's text (not read)" in missing[0][1]
    assert result["dp"].n_train == 3


def test_whitelist(tmp_path, lines):
    train, val = lines
    chars = set().union(*(set(unicodedata.normalize("NFC", text(p))) for p in train + val)) - {" "}
    victim = max(chars)  # a character some line uses
    users = sorted(p for p in train + val if victim in unicodedata.normalize("NFC", text(p)))
    allowed = "".join(sorted(chars - {victim}))
    wl = tmp_path / "allowed.txt"
    wl.write_text(allowed + "\n", encoding="utf-8")
    dp = prepare(tmp_path, f"data.whitelist_file={wl}")
    items = dp.outcome.findings["whitelist"].items
    assert [p for p, _, _ in items] == users and f"U+{ord(victim):04X}" in items[0][1]
    assert str(users[0]) in error_of(tmp_path, f"data.whitelist_file={wl}", "data.checks.whitelist=fail")
    assert not prepare(tmp_path).outcome.findings["whitelist"].items  # no whitelist: no check


def test_several_problems_name_the_first_and_count_the_rest(tmp_path, lines):
    train, val = lines
    gt_of(train[0]).unlink()
    val[2].write_bytes(b"not a png")
    message = error_of(tmp_path)
    assert message.startswith("data.train: 1 × image without .gt.txt")
    assert "and 1 more problem(s): bad_image 1" in message


def test_actions_that_make_no_sense_are_refused(tmp_path, lines):
    with pytest.raises(ConfigError, match="data.checks.bad_image='warn'.*cannot be trained on"):
        prepare(tmp_path, "data.checks.bad_image=warn")
    with pytest.raises(ConfigError, match="data.checks.invisible_chars='drop'"):
        prepare(tmp_path, "data.checks.invisible_chars=drop")
    # not an action at all: refused while composing (an Enum field), naming the key and the valid actions
    with pytest.raises(ConfigCompositionException, match="data.checks.whitelist=ignore") as info:
        prepare(tmp_path, "data.checks.whitelist=ignore")
    assert "fail, warn, drop" in str(info.value.__cause__)


# ------------------------------------------------------------------------------------------- through train.py


def run_train(tmp: Path, *overrides: str) -> Result:
    """``python train.py …`` in tmp, run in this process (tests/conftest.py: run_inprocess)."""
    base = [
        f"paths.root={tmp}",
        f"model_dir={tmp / 'model'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
        f"data.train=[{tmp}/train/*.png]",
        f"data.val=[{tmp}/val/*.png]",
        f"data.cache_dir={tmp / 'cache'}",
    ]
    return run_inprocess("train", [*base, *overrides], cwd=tmp)


def test_data_check_only_writes_the_manifest_and_exits_0(tmp_path, lines):
    train, _ = lines
    gt_of(train[1]).write_bytes(b"")
    proc = run_train(tmp_path, "data_check_only=true")
    assert proc.returncode == 0, proc.stderr
    assert "dropped data.train: 1 × empty or whitespace-only GT" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["manifest.json"]
    m = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert m["status"] == "passed" and m["totals"]["train"]["lines"] == 5 and m["totals"]["val"]["lines"] == 4
    assert not (tmp_path / "mlruns.db").exists(), "data_check_only must not start an MLflow run"


def test_data_check_only_fails_with_the_report_written(tmp_path, lines):
    _, val = lines
    val[3].write_bytes(val[3].read_bytes()[:150])
    proc = run_train(tmp_path, "data_check_only=true")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hsbcala: error: data.val: 1 × image does not decode") and str(val[3]) in last
    m = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert m["status"] == "failed" and m["checks"]["bad_image"]["first"][0]["path"] == str(val[3])


def test_a_failed_check_creates_nothing_when_training(tmp_path, lines):
    train, _ = lines
    bad = composed_line(train)
    gt_of(bad).write_text(unicodedata.normalize("NFD", text(bad)), encoding="utf-8")
    proc = run_train(tmp_path, "data.checks.mixed_normalization=fail")
    assert proc.returncode == 2 and str(bad) in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "model").exists() and not (tmp_path / "mlruns.db").exists()


def test_a_byte_order_mark_is_reported_and_not_counted_as_a_character(tmp_path, lines):
    """A .gt.txt saved with a BOM: the engines delete U+FEFF (their bidi step, hsbcala/evaluate/cer.py), so it is no
    character of the text, the manifest or its character set; the data check says how many lines carry one."""
    train, val = lines
    for image in (train[0], val[0]):
        gt_of(image).write_bytes(b"\xef\xbb\xbf" + gt_of(image).read_bytes())
    dp = prepare(tmp_path)  # default: warn, the lines stay
    finding = dp.outcome.findings["invisible_chars"]
    assert finding.action == "warn" and sorted(p for p, _, _ in finding.items) == sorted([train[0], val[0]])
    assert "U+FEFF, a UTF-8 byte-order mark" in finding.items[0][1]
    assert (dp.n_train, dp.n_val) == (6, 4)
    assert dp.manifest["checks"]["invisible_chars"]["count"] == 2
    records = {r["image"]: r for r in dp.manifest["lines"]}
    assert records[str(train[0])]["text"] == text(train[0]).lstrip("\ufeff")
    assert not any("\ufeff" in r["text"] for r in dp.manifest["lines"])
    assert dp.manifest["totals"]["charset_size"] == len(
        {c for r in dp.manifest["lines"] for c in unicodedata.normalize("NFC", r["text"])}
    )
    assert "invisible_chars=fail" in error_of(tmp_path, "data.checks.invisible_chars=fail")


def test_a_byte_order_mark_is_no_new_character_of_the_codec_report(tmp_path, lines):
    """The codec report counts the characters the engines train on: a BOM is none (it is deleted first)."""
    from tests.test_codec_report import german_charset
    from tests.test_models import conv, lstm, pool, v2_trainer_params

    train, val = lines
    for image in train + val:
        gt_of(image).write_bytes(b"\xef\xbb\xbf" + gt_of(image).read_bytes())
    model = tmp_path / "german" / "best.ckpt.json"
    model.parent.mkdir()
    model.write_text(json.dumps(v2_trainer_params([conv(8), pool(), lstm(16)], german_charset())), "utf-8")
    r = prepare(tmp_path, f"warmstart.model={model}").codec_report
    assert r is not None and "\ufeff" not in {e["char"] for e in r["added"]}
