"""hsbcala.evaluate.cer on rapidfuzz counts exactly the errors of the pure-Python Levenshtein matrix it replaced.

:func:`_reference_align` is that implementation, copied verbatim from hsbcala/evaluate/cer.py as of commit 7ef4640. The
error counts (hence every CER) must be identical, line by line, on hand-made pairs (empty strings, combining
characters, Upper Sorbian letters), on random short strings, and on 3,000 real GT lines of ../shared/data
against a seeded corruption of themselves (substitutions, deletions, insertions). Only the tie-breaking among
optimal alignments differs (how one total splits into S/D/I; see the module doc of hsbcala/evaluate/cer.py), so that
is not compared; that the confusions (grouped as calamari-eval groups them) cover every edit is. bench/cer_speed.py
times both on the same lines (:func:`sample_pairs`).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hsbcala.evaluate import cer
from hsbcala.evaluate.cer import Alignment
from tests.conftest import SHARED
from tests.gt_helpers import need

LINES = 3000
SEED = 20240607
#: what the corruption draws from: Fraktur letters, long s, Upper Sorbian letters, combining caron and e above
NOISE = "aeinrstuſßfmhbcdlkvwzABDEGHUVW .,;:-⸗ěčćřłńóžšźĚČŘŁŽŠ\u030c\u0364"


def _reference_align(gt: str, pred: str) -> Alignment:
    """Levenshtein alignment (unit costs) of two strings, with the confusions along one optimal path."""
    start = 0
    limit = min(len(gt), len(pred))
    while start < limit and gt[start] == pred[start]:
        start += 1
    end_gt, end_pred = len(gt), len(pred)
    while end_gt > start and end_pred > start and gt[end_gt - 1] == pred[end_pred - 1]:
        end_gt -= 1
        end_pred -= 1
    a, b = gt[start:end_gt], pred[start:end_pred]
    if not a and not b:
        return Alignment(0, 0, 0, ())
    if not a:
        return Alignment(0, 0, len(b), (("", b),))
    if not b:
        return Alignment(0, len(a), 0, ((a, ""),))

    m, n = len(a), len(b)
    rows = [list(range(n + 1))]
    for i in range(1, m + 1):
        prev = rows[-1]
        row = [i] + [0] * n
        ai = a[i - 1]
        for j in range(1, n + 1):
            sub = prev[j - 1] + (ai != b[j - 1])
            dele = prev[j] + 1
            ins = row[j - 1] + 1
            row[j] = sub if sub <= dele and sub <= ins else min(dele, ins)
        rows.append(row)

    # Walk back along one optimal path (diagonal first, then deletion, then insertion).
    subs = dels = inss = 0
    confusions: list[tuple[str, str]] = []
    run_gt: list[str] = []
    run_pred: list[str] = []

    def close_run() -> None:
        if run_gt or run_pred:
            confusions.append(("".join(reversed(run_gt)), "".join(reversed(run_pred))))
            run_gt.clear()
            run_pred.clear()

    i, j = m, n
    while i > 0 or j > 0:
        here = rows[i][j]
        if i > 0 and j > 0 and rows[i - 1][j - 1] + (a[i - 1] != b[j - 1]) == here:
            if a[i - 1] == b[j - 1]:
                close_run()
            else:
                subs += 1
                run_gt.append(a[i - 1])
                run_pred.append(b[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and rows[i - 1][j] + 1 == here:
            dels += 1
            run_gt.append(a[i - 1])
            i -= 1
        else:
            inss += 1
            run_pred.append(b[j - 1])
            j -= 1
    close_run()
    confusions.reverse()
    return Alignment(subs, dels, inss, tuple(confusions))


def corrupt(text: str, rng: random.Random) -> str:
    """A deterministic "prediction": per character 3 % substituted, 2 % deleted, 2 % followed by an insert."""
    out = []
    for ch in text:
        r = rng.random()
        if r < 0.03:
            out.append(rng.choice(NOISE))
        elif r < 0.05:
            continue
        else:
            out.append(ch)
            if r < 0.07:
                out.append(rng.choice(NOISE))
    return "".join(out)


def sample_pairs(data_dir: Path = SHARED / "data", n: int = LINES) -> list[tuple[str, str]]:
    """(GT, corrupted GT) for a seeded sample of n ``*.gt.txt`` lines under data_dir, both normalised as
    calamari-eval 2 does (as evaluate.py aligns them). Raises ValueError when fewer lines exist."""
    files = sorted(data_dir.rglob("*.gt.txt"), key=lambda p: p.relative_to(data_dir).as_posix())
    if len(files) < n:
        raise ValueError(f"{len(files)} *.gt.txt files under {data_dir}, {n} wanted")
    picked = sorted(random.Random(SEED).sample(range(len(files)), n))
    pairs = []
    for k, idx in enumerate(picked):
        raw = files[idx].read_text(encoding="utf-8")
        pairs.append((cer.normalize(raw), cer.normalize(corrupt(raw, random.Random(SEED + k)))))
    return pairs


@pytest.fixture(scope="module")
def real_pairs() -> list[tuple[str, str]]:
    return sample_pairs(need(SHARED / "data"))


def _check_accounts_for_every_edit(gt: str, pred: str, al: Alignment) -> None:
    # The confusions are grouped as calamari-eval groups them (longest-common-substring anchors, see
    # hsbcala/evaluate/cer.py): what they leave is matched, the same characters on both sides, and each pair takes at
    # most max(len) edits (calamari-eval's "sync errors" >= the edit distance)
    gt_side, pred_side = sum(len(g) for g, _ in al.confusions), sum(len(p) for _, p in al.confusions)
    assert len(gt) - gt_side == len(pred) - pred_side >= 0, (gt, pred, al)
    assert sum(max(len(g), len(p)) for g, p in al.confusions) >= al.errors, (gt, pred, al)
    assert all(g != p for g, p in al.confusions), (gt, pred, al)
    assert bool(al.confusions) == bool(al.errors), (gt, pred, al)


HAND_MADE = [
    ("", ""),
    ("", "x"),
    ("abc", ""),
    ("", "Hdźe je ćěło?"),
    ("Wurm und", "Wnrm vnd"),
    ("rn", "m"),
    ("ab", "ba"),  # a tie: 2 substitutions or an insertion and a deletion
    ("c\u030c", "č"),  # decomposed vs precomposed: 2 code points vs 1
    ("Rae\u0364the", "Räthe"),  # combining e above (Fraktur umlaut) vs ä
    ("ěčćřłńóžš", "ecclnozs"),  # Sorbian letters read without their diacritics (and one lost)
    ("Hornjoserbšćina", "Hornjoserbscina"),
    ("Přichod Łužiskich Serbow", "Prichod Luziskich Serbow"),
    ("Wón je ńó", "Won je no"),
    ("žiwjenje", "žiwjeńje"),
    ("Serbska ludowa kultura", "Serbska ludowa kultura"),
    ("ſtecken ſie", "ftecken fie"),
    ("Kaiſerl. Raͤthe und", "Kaiſerl.7 RatWh undv"),
    ("a" * 40, "b" * 3),
]


@pytest.mark.parametrize(("gt", "pred"), HAND_MADE)
def test_hand_made_pairs_count_the_errors_of_the_reference(gt, pred):
    ref, al = _reference_align(gt, pred), cer.align(gt, pred)
    assert al.errors == ref.errors == cer.distance(gt, pred)
    _check_accounts_for_every_edit(gt, pred, al)
    s, r = cer.score([(gt, pred)]), cer.Score()
    r.add(cer.normalize(gt), _reference_align(cer.normalize(gt), cer.normalize(pred)))
    assert (s.lines, s.chars, s.errors, s.cer) == (r.lines, r.chars, r.errors, r.cer)


def test_random_strings_of_sorbian_and_combining_letters_count_the_errors_of_the_reference():
    rng = random.Random(7)
    letters = "aeoěčćřłńóžš\u030c\u0301 "
    for _ in range(3000):
        gt = "".join(rng.choice(letters) for _ in range(rng.randint(0, 16)))
        pred = "".join(rng.choice(letters) for _ in range(rng.randint(0, 16)))
        al = cer.align(gt, pred)
        assert al.errors == _reference_align(gt, pred).errors, (gt, pred)
        _check_accounts_for_every_edit(gt, pred, al)


def test_real_lines_count_the_errors_of_the_reference_line_by_line(real_pairs):
    assert len(real_pairs) == LINES
    ours = [cer.align(g, p) for g, p in real_pairs]
    ref = [_reference_align(g, p) for g, p in real_pairs]
    differing = [
        (g, p, a.errors, r.errors)
        for (g, p), a, r in zip(real_pairs, ours, ref, strict=True)
        if a.errors != r.errors
    ]
    assert not differing, f"{len(differing)} lines differ, first: {differing[0]}"
    total = sum(r.errors for r in ref)
    assert total > LINES  # the corruption did corrupt: about 3 errors a line
    s = cer.score(real_pairs)  # normalising again changes nothing
    assert (s.lines, s.chars, s.errors) == (LINES, sum(len(g) for g, _ in real_pairs), total)
    for (g, p), a in zip(real_pairs, ours, strict=True):
        _check_accounts_for_every_edit(g, p, a)


# Invisible characters: calamari-eval's bidi step deletes them (hsbcala/evaluate/cer.py module doc), so a .gt.txt an
# editor saved with a byte-order mark costs nothing. Each pair: (GT file bytes, prediction, errors, GT chars).
INVISIBLE = [
    ("\ufeffHač na puć".encode(), "Hač na puć", 0, 10),  # the BOM
    ("\ufeff Hač na puć \r\n".encode(), "Hač na puć", 0, 10),  # BOM before a space: stripped after deleting
    ("Hač\u200b na\u00ad puć".encode(), "Hač na puć", 0, 10),  # zero-width space, soft hyphen
    ("Hač na puć\r".encode(), "Hač na puć", 0, 10),  # a CR stays handled as before
    ("Ha\u0063\u030c na puć".encode(), "Hač na puć", 0, 10),  # NFD as before
]


@pytest.mark.parametrize(("raw", "pred", "errors", "chars"), INVISIBLE)
def test_invisible_characters_cost_nothing(raw, pred, errors, chars):
    s = cer.score([(raw.decode("utf-8"), pred)])
    assert (s.errors, s.chars) == (errors, chars)
    assert cer.invisible(raw.decode("utf-8")) == [c for c in raw.decode("utf-8") if c in "\ufeff\u200b\u00ad"]


@pytest.mark.slow
@pytest.mark.parametrize("version", ["cala1", "cala2"])
def test_invisible_characters_count_as_in_calamari_eval(tmp_path, version):
    """The real calamari-eval of each version on the same files gives the same errors and GT characters."""
    import re
    import subprocess

    from hsbcala.engines import envs
    from tests.conftest import ROOT, compose_cfg

    for i, (raw, pred, _, _) in enumerate(INVISIBLE):
        (tmp_path / f"l{i}.gt.txt").write_bytes(raw)
        (tmp_path / f"l{i}.pred.txt").write_text(pred + "x", encoding="utf-8")  # one error a line
    program = envs.resolve(compose_cfg([f"version={version}"]), ROOT).program("calamari-eval")
    gt = f"{tmp_path}/*.gt.txt"
    argv = [program, "--gt.texts", gt] if version == "cala2" else [program, "--gt", gt, "--no_progress_bars"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    m = re.search(r"\((\d+) errs, (\d+) total chars", proc.stdout + proc.stderr)
    assert m, (proc.stdout + proc.stderr)[-3000:]
    rules = "calamari2" if version == "cala2" else "calamari1"
    ours = cer.score(
        [(raw.decode("utf-8"), pred + "x") for raw, pred, _, _ in INVISIBLE], rules
    )  # as evaluate.py reads a .gt.txt: UTF-8, the BOM kept as U+FEFF
    assert (ours.errors, ours.chars) == (int(m.group(1)), int(m.group(2))) == (len(INVISIBLE), 50)
