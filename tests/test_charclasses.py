"""hsbcala.evaluate.charclasses: per-class CER, per-character recall/precision, the Sorbian letters' table, WER."""

from __future__ import annotations

import pytest

from hsbcala.evaluate import cer, charclasses

# hand-made: ě→e three times of four, ł→l once of two, ř→r once of two, a deleted full stop, an inserted x
PAIRS = [
    ("měšćan", "mešćan"),
    ("běły", "beły"),
    ("ěž", "ěž"),
    ("wěc", "wec"),
    ("łuka", "luka"),
    ("řeč", "reč"),
    ("řeka", "řeka"),
    ("12, 3.", "12, 3"),
    ("ab", "abx"),
]


def _stats(pairs=PAIRS, sorbian=charclasses.DEFAULT_SORBIAN) -> tuple[charclasses.CharStats, cer.Score]:
    st, score = charclasses.CharStats(sorbian), cer.Score()
    for g, p in pairs:
        g, p = cer.normalize(g), cer.normalize(p)
        al = cer.align(g, p)
        st.add(g, p, al.ops)
        score.add(g, al)
    return st, score


def test_recall_of_sorbian_letters_read_as_their_plain_letters_is_exact():
    st, _ = _stats()
    table = {r["char"]: r for r in st.sorbian_letters()}
    assert (table["ě"]["gt"], table["ě"]["recall"], table["ě"]["misread"], table["ě"]["misread_count"]) == (
        4,
        0.25,
        "e",
        3,
    )
    assert (table["ł"]["gt"], table["ł"]["recall"], table["ł"]["misread"]) == (2, 0.5, "l")
    assert (table["ř"]["gt"], table["ř"]["recall"], table["ř"]["misread"]) == (2, 0.5, "r")
    assert table["ž"]["recall"] == 1.0 and table["ž"]["misread"] is None
    assert table["Ě"]["gt"] == 0 and table["Ě"]["recall"] is None  # listed, never a made-up number
    # precision of e: 5 predicted, 2 of them GT e's (řeč, řeka); of ě: 1 predicted, right
    assert st.precision("e") == 2 / 5 and st.precision("ě") == 1.0
    assert list(table) == list(charclasses.DEFAULT_SORBIAN)


def test_class_figures_recombine_to_the_overall_cer():
    st, score = _stats()
    classes = st.classes()
    assert classes["sorbian"]["chars"] == 4 + 2 + 2 + 1 + 1 + 1 + 1  # ě ł ř, then š ć ž č once each
    assert classes["sorbian"]["errors"] == 3 + 1 + 1 and classes["sorbian"]["recall"] == 7 / 12
    assert sum(c["errors"] for c in classes.values()) == score.errors
    assert sum(c["chars"] for c in classes.values()) == score.chars
    assert classes["punctuation"]["recall"] == 0.5 and classes["punctuation"]["errors"] == 1
    assert st.row(".")["misread"] == "" and st.row(".")["misread_count"] == 1  # deleted: read as nothing
    assert classes["digits"] == {
        "chars": 3,
        "errors": 0,
        "cer": 0.0,
        "recall": 1.0,
        "predicted": 3,
        "precision": 1.0,
    }
    assert classes["whitespace"]["chars"] == 1 and classes["whitespace"]["errors"] == 0
    letters = classes["letters"]  # the inserted x is a letter error, no GT letter lost
    assert letters["errors"] == 1 and letters["recall"] == 1.0
    assert classes["other"]["chars"] == 0 and classes["other"]["cer"] is None


def test_the_sorbian_set_is_configurable_and_checked():
    st, _ = _stats(sorbian=charclasses.letters_of(["ě", "ł"]))
    assert [r["char"] for r in st.sorbian_letters()] == ["ě", "ł"]
    assert st.classes()["sorbian"]["chars"] == 6  # ř, š, … count as other letters now
    assert charclasses.letters_of("e\u030c") == ("ě",)  # NFC: e + combining caron is ě
    with pytest.raises(ValueError, match="not one character"):
        charclasses.letters_of(["ch"])


def test_wer_counts_word_edits_over_gt_words_after_normalisation():
    st, _ = _stats([("Hdźe   je  wón?", "Hdźe je won?"), ("dobry dźeń", "dobry dźeń")])
    assert (st.words, st.word_errors, st.wer) == (5, 1, 0.2)
    assert charclasses.word_errors("a b c", "a c") == (1, 3)
    assert charclasses.word_errors("", "x") == (1, 0)
