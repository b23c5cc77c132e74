"""The text of the synthetic lines: sentences, cut into lines, split into train and val.

Text
----
Lines of 15–60 characters are cut at word boundaries from sentences: those of a text file (one sentence a
line, e.g. the team's 644 sentences from the Upper Sorbian UD treebank), or, when none is given or the file
is missing, :data:`BUILTIN_PHRASES` below. Words with characters outside :data:`CHARSET` (Greek, Arabic,
wiki mark-up, …) are left out and split a sentence. The sentences are split into train and val (seeded)
before cutting, and any line text in both is dropped from val, so train and val never share a line. When a
pool yields too few lines (the built-in list does), it is topped up with word sequences drawn from its own
words.
"""

from __future__ import annotations

import pathlib
import random
import unicodedata
import warnings
from collections.abc import Sequence

from hsbcala.core.errors import DataError

MIN_CHARS = 15
MAX_CHARS = 60

SORBIAN_LETTERS = "ěčćřšžźłńóĚČĆŘŠŽŹŁŃÓ"
#: Every character a synthetic line may contain (both faces render all of them).
CHARSET = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    + SORBIAN_LETTERS
    + "äöüßÄÖÜ"
    + " .,;:!?()-\"'/%„“”«»–"
)

#: Upper Sorbian phrases (written for this module) used when no text file is given or found. Together they
#: hold every Upper Sorbian letter, lower and upper case, several times.
BUILTIN_PHRASES = (
    "Serbske Budyšin je stolica Hornjeje Łužicy.",
    "Dobry dźeń, kak so maš? Dźakuju so, derje.",
    "Witajće k nam do Łužicy, do kraja Serbow!",
    "Hornjoserbšćina je zapadosłowjanska rěč.",
    "Naša wjes leži při rěce Sprjewi pod horami.",
    "W zymje je tu přeco wjele sněha a lodu.",
    "Dźěći hraja na dworje a spěwaja wjesele.",
    "Ćichi wječor nad Choćebuzom a Grodkom.",
    "Žona a muž dźěłataj cyły dźeń na polu.",
    "Mój nan je wučer w Chrósćicach při Kamjencu.",
    "Ćěsne hasy stareho města su prózdne.",
    "Přeju wam wjesołe hody a zbožowne nowe lěto!",
    "Knihownja je wočinjena wot póndźele do pjatka.",
    "Ryba płuwa w čistej wodźe hłubokeho hata.",
    "Hdźe je dróha do Kamjenca a do Radworja?",
    "Serbski ludowy ansambl zaspěwa dźensa wječor.",
    "Stary kóń stoji w hródźi a čaka na wowka.",
    "Woheń so w kachlach pali, wonka je zyma.",
    "Žaba skoči z brjoha do hata, ptačk zaćichnje.",
    "Wšitcy čłowjekojo su wot naroda swobodni a jenacy po dostojnosći a prawach.",
    "Ćišćernja Domowiny w Budyšinje wuda nowu knihu.",
    "Rěčny kurs za dorosćenych započnje w septembru.",
    "Čitaj knihu wot spočatka hač do kónca!",
    "Šula so rano w sydmich započnje, dźěći hižo čakaja.",
    "Ćah přijědźe z Drježdźan z połhodźinskim zapozdźenjom.",
    "Łužica je rjany kraj z wjele jězorami a lěsami.",
    "Měrćin Nowak-Njechorński běše serbski spisowaćel a moler.",
    "Handrij Zejler je basnik serbskeje hymny.",
    "Rjana Łužica, sprawna, přećelna, mojich serbskich wótcow kraj,",
    "mojich zbóžnych sonow raj, swjate su mi twoje hona!",
    "Na kermuši so tancuje, spěwa a hraje hač do nocy.",
    "Ptački spěwaja w zahrodźe, słónco so směje.",
    "Jan Arnošt Smoler zhromadźi serbske ludowe spěwy.",
    "Kraj, hdźež serbska rěč žiwa wostanje na wěčnosć.",
    "Njedźelu pojědźemy z kołom do Radworja a Ralbic.",
    "Čerwjeny mak kćěje na polu při pućiku.",
    "Ćěmna nóc nad hatom, měsačk so błyšći w wodźe.",
    "Přichodny tydźeń změjemy zhromadźiznu w Slepom.",
    "Žně so w juliju započinaja, kóždy pomha.",
    "Mać wari słódki kofej a peče tykanc.",
    "Wěra, nadźija a lubosć su najwažniše.",
    "Budyšin, 12. oktobra 1848. Čestny přećel!",
    "Hdyž so dešćik skónči, dźěmy do lěsa na hriby.",
    "Zelene łuki a čiste rěki našeje domizny.",
    "Wokoło Łazka a Bukec je wjele małych wjeskow.",
    "Ćežka zyma, kóń a wóz stejitej w Čornym Chołmcu.",
    "DŹEŃ SERBSKEJE RĚČE W BUDYŠINJE",
    "ŁUŽISKA ĆIŠĆERNJA, ŽIWJENJE A ŠULA",
    "ČASOPIS PŘIRODA A DOMIZNA, ČISŁO 3",
    "STARY KÓŃ NA WJESNEJ DRÓZE",
    "PISMIKI: Ě Č Ć Ř Š Ž Ź Ł Ń Ó, dź, Dź, DŹ.",
    "Njebjo je módre, Ewa a Jan dźětaj do šule.",
)


# ------------------------------------------------------------------------------------------- text
def _load_sentences(text_file: pathlib.Path | None) -> tuple[list[str], str]:
    """Sentences and a description of where they came from (recorded in the stamp)."""
    if text_file is not None:
        path = pathlib.Path(text_file)
        if path.is_file():
            try:
                raw = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"synthetic text file {path}: cannot read it as UTF-8 ({exc})") from exc
            sentences = [unicodedata.normalize("NFC", s).strip() for s in raw.splitlines()]
            sentences = [s for s in sentences if s]
            return sentences, "file"
        warnings.warn(f"synthetic text file {path} not found; using the built-in phrases", stacklevel=3)
    return list(BUILTIN_PHRASES), "builtin"


def _word_ok(word: str) -> bool:
    return all(c in CHARSET for c in word)


def _cut(sentence: str, rng: random.Random) -> list[str]:
    """Cut a sentence into lines of MIN_CHARS..MAX_CHARS at word boundaries, leaving out unusable words."""
    groups: list[list[str]] = [[]]
    for word in sentence.split():
        if _word_ok(word) and len(word) <= MAX_CHARS:
            groups[-1].append(word)
        elif groups[-1]:
            groups.append([])
    lines: list[str] = []
    for words in groups:
        cur: list[str] = []
        goal = rng.randint(25, MAX_CHARS)
        for word in words:
            if cur and len(" ".join(cur)) + 1 + len(word) > goal:
                lines.append(" ".join(cur))
                cur, goal = [], rng.randint(25, MAX_CHARS)
            cur.append(word)
        if cur:
            tail = " ".join(cur)
            if len(tail) < MIN_CHARS and lines and len(lines[-1]) + 1 + len(tail) <= MAX_CHARS:
                lines[-1] += " " + tail
            else:
                lines.append(tail)
    return [line for line in lines if MIN_CHARS <= len(line) <= MAX_CHARS]


def _salad(words: list[str], rng: random.Random) -> str:
    goal = rng.randint(MIN_CHARS + 5, MAX_CHARS)
    out: list[str] = []
    while True:
        w = rng.choice(words)
        if out and len(" ".join(out)) + 1 + len(w) > goal:
            break
        out.append(w)
    return " ".join(out)


def _pool_lines(sentences: list[str], n: int, rng: random.Random, exclude: set[str]) -> list[str]:
    """*n* distinct lines from *sentences* (topped up with word sequences), none of them in *exclude*."""
    seen = set(exclude)
    lines: list[str] = []
    for s in sentences:
        for line in _cut(s, rng):
            if line not in seen:
                seen.add(line)
                lines.append(line)
    rng.shuffle(lines)
    lines = lines[:n]
    words = sorted({w for s in sentences for w in s.split() if _word_ok(w) and len(w) <= MAX_CHARS - 10})
    tries = 0
    while len(lines) < n and words and tries < 50 * n:
        tries += 1
        line = _salad(words, rng)
        if MIN_CHARS <= len(line) <= MAX_CHARS and line not in seen:
            seen.add(line)
            lines.append(line)
    if len(lines) < n:
        raise DataError(f"synthetic text: only {len(lines)} distinct usable lines, {n} needed")
    return lines


def make_lines(sentences: Sequence[str], n_train: int, n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """Train and val line texts: sentences split (seeded) before cutting; no text in both."""
    # the seed string of the old module path: the same seed draws the same demo lines as before the move
    rng = random.Random(f"hsbcala.synth.lines:{seed}")
    pool = sorted({unicodedata.normalize("NFC", s).strip() for s in sentences if s.strip()})
    if len(pool) < 2:
        raise DataError("synthetic text: need at least 2 distinct sentences to split into train and val")
    rng.shuffle(pool)
    k = min(len(pool) - 1, max(1, round(len(pool) * n_val / max(1, n_train + n_val))))
    val_sentences, train_sentences = pool[:k], pool[k:]
    train = _pool_lines(train_sentences, n_train, rng, set())
    val = _pool_lines(val_sentences, n_val, rng, set(train))
    return train, val
