"""Words, lemmas and slugs: the text primitives every stage-7 check and normaliser shares.

Plural twins are recognised by a real lemmatizer (``lemminflect``'s dictionary,
out-of-vocabulary words left alone), never by a suffix rule: ``texas``, ``los angeles``
and ``lenses`` stay what they are unless the dictionary knows the word.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*", re.UNICODE)

# English function words (articles, pronouns, prepositions, conjunctions, auxiliaries,
# quantifiers): a keyword made only of these says nothing about a photo.
STOPWORDS = frozenset("""
a about above across after against all along also although am among an and another any
anybody anyone anything are around as at be because been before behind being below beneath
beside besides between beyond both but by can could did do does doing done down during each
either else enough every everybody everyone everything few for from further had has have
having he her here hers herself him himself his how however i if in inside instead into is it
its itself just least less like many may me might mine more most much must my myself near
neither next no nobody none nor not nothing now of off on once one only onto or other others
otherwise our ours ourselves out outside over own per rather same several shall she should
since so some somebody someone something such than that the their theirs them themselves then
there these they this those though through throughout thus till to too toward towards under
underneath unless until up upon us very via was we well were what whatever when where whether
which while who whoever whom whose why will with within without would yet you your yours
yourself yourselves
""".split())


def words(text: str) -> list[str]:
    """Lower-case word tokens (hyphenated words stay one token: ``x-ray``)."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text or "")]


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def fold(text: str) -> str:
    """ASCII, lower case: ``Zürich`` → ``zurich`` (for comparing names)."""
    return unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().lower()


# Bumped when what the kept noun table holds changes: older copies are then ignored.
NOUN_TABLE_VERSION = 1


@lru_cache(maxsize=1)
def _noun_table() -> dict[str, tuple[str, ...]]:
    """Every lower-case noun form lemminflect's dictionary knows → its lemmas, exactly as
    ``getLemma(word, upos="NOUN", lemmatize_oov=False)`` gives them.

    Loading the dictionary (70,000 gzipped CSV lines) cost each process ~0.5 s (~1 s
    on a busy machine) at its first stage-7 check; the table is kept under
    ``GALLERYFLOW_HOME/cache`` (keyed on lemminflect's version and its file's size and
    mtime) and loads in ~10 ms. A copy that cannot be read is built and written again.
    """
    import pickle
    from importlib.metadata import version

    from lemminflect import config

    from galleryflow.core.fsutil import atomic_path
    from galleryflow.core.settings import get_settings

    source = Path(config.lemma_lu_fn)
    stat = source.stat()
    cached = (get_settings().home / "cache" / f"noun-lemmas-v{NOUN_TABLE_VERSION}-"
              f"{version('lemminflect')}-{stat.st_size}-{stat.st_mtime_ns}.pickle")
    try:
        with open(cached, "rb") as handle:
            table = pickle.load(handle)
        if isinstance(table, dict):
            return table
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        pass
    from lemminflect.core.Lemmatizer import Lemmatizer

    lemmatizer = Lemmatizer()
    known = lemmatizer._getLemmaDict()
    overrides = lemmatizer._getOverridesDict()
    table = {word: tuple(lemmatizer.getLemma(word, upos="NOUN", lemmatize_oov=False))
             for word in {*known, *overrides}
             if word == word.lower() and "NOUN" in {**known.get(word, {}), **overrides.get(word, {})}}
    try:
        with atomic_path(cached) as tmp:
            tmp.write_bytes(pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:
        pass  # a read-only home: the next process builds it again
    return table


@lru_cache(maxsize=20000)
def noun_lemmas(word: str) -> tuple[str, ...]:
    """The dictionary lemmas of a noun form (``()`` for a word the dictionary lacks)."""
    if word == word.lower():  # every word the checks compare (the table's keys)
        return _noun_table().get(word, ())
    from lemminflect import getLemma

    return tuple(getLemma(word, upos="NOUN", lemmatize_oov=False) or ())


def lemma(word: str) -> str:
    """The singular of a known plural noun, else the word itself (never a made-up word)."""
    w = word.lower()
    other = [f for f in noun_lemmas(w) if f != w]
    return other[0] if other else w


def lemmas(text: str) -> set[str]:
    """Every content word of ``text`` and its noun lemma, for evidence comparisons."""
    out: set[str] = set()
    for w in content_words(text):
        out.add(w)
        out.update(noun_lemmas(w))
    return out


def is_plural_of(plural: str, singular: str) -> bool:
    """``ridges``/``ridge``, ``leaves``/``leaf``, ``lenses``/``lens`` by the dictionary."""
    return plural != singular and singular in noun_lemmas(plural)


# Cached: every draft is compared with each caption and alt text of its set, the pending
# rows and the published ones, so without it the same few thousand texts were parsed again
# for each draft (a third of the offline drafting time on 500 photos, growing with the home).
@lru_cache(maxsize=32768)
def content_set(text: str) -> frozenset[str]:
    """Content words reduced to their lemma: what duplicate detection compares."""
    return frozenset(lemma(w) for w in content_words(text) if len(w) > 1)


def overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Share of content words two texts have in common (Jaccard), word order ignored."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def slugify(text: str, max_chars: int = 60) -> str:
    """ASCII, lowercase, hyphen-joined words: ``"Café – Zürich, 5 am"`` → ``cafe-zurich-5-am``."""
    slug = re.sub(r"[^a-z0-9]+", "-", fold(text)).strip("-")
    if len(slug) > max_chars:
        slug = slug[:max_chars].rsplit("-", 1)[0] or slug[:max_chars]
    return slug.strip("-")


def quote(text: str, limit: int = 60) -> str:
    text = collapse(text)
    return f"“{text[:limit]}…”" if len(text) > limit else f"“{text}”"
