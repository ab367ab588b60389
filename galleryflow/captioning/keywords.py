"""Evidence-first keywords.

The evidence for a keyword: the original's own text fields (EXIF ImageDescription and
UserComment, IPTC keywords, XMP subject), the set's location and subject, the folder
name's subject words, the place named from GPS, the date (month, season, time of day),
identifiers, and the classifier's hints (CLIP zero-shot labels from stage 5, against
:func:`hint_vocabulary`). **Not** evidence: the model's own caption, alt text and
subject, and the camera (``canon``, ``eos``, a lens name).

A keyword without evidence is dropped (``fixed``, recorded). When no classifier ran (no
weights), a visual keyword the caption also names is kept as ``unverified``: shown as
such to the reviewer, never silently trusted. A person's keyword is never dropped: it
gets a warning.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from functools import lru_cache
from pathlib import Path

from galleryflow.captioning.checks import planted_text
from galleryflow.captioning.draft import Draft, Evidence, Issue
from galleryflow.captioning.identifiers import identifier_words
from galleryflow.captioning.text import content_words, lemma, lemmas, words

VOCABULARY_FILE = Path(__file__).with_name("vocabulary.txt")

# Camera and lens vocabulary: never evidence for what is in a photo.
CAMERA_WORDS = frozenset(
    "canon nikon nikkor sony fujifilm fuji fujinon leica olympus om panasonic lumix pentax "
    "ricoh hasselblad sigma tamron zeiss voigtlander samyang gopro dji insta360 iphone apple "
    "pixel samsung huawei xiaomi eos alpha dslr slr mirrorless camera lens lenses mm usm "
    "stm ois vr is".split()
)


@lru_cache(maxsize=8)
def _shipped() -> tuple[str, ...]:
    lines = VOCABULARY_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def hint_vocabulary(extra: Sequence[str] = ()) -> list[str]:
    """The shipped labels plus ``settings.captioning.hint_vocabulary``, each once."""
    return list(dict.fromkeys([*_shipped(), *(e.strip().lower() for e in extra if e.strip())]))


def _fact_texts(evidence: Evidence) -> list[str]:
    """Evidence texts minus any instruction planted in them (from its first word on)."""
    planted = planted_text(evidence)
    texts = []
    for name, text in evidence.texts().items():
        if name in ("camera", "lens"):
            continue
        if name == "set_name":
            text = re.sub(r"\d+", " ", text)  # a folder name states a date, not a number keyword
        texts.append(text[: len(text) - len(planted[name])] if name in planted else text)
    texts += [evidence.place or "", evidence.time_of_day or "", evidence.month or "",
              evidence.season or ""]
    return texts


def evidence_lemmas(evidence: Evidence) -> set[str]:
    """Every word (and its lemma) a keyword may draw on."""
    out: set[str] = set()
    for text in _fact_texts(evidence):
        out |= lemmas(text)
    out |= identifier_words(evidence.identifiers)
    return out


def hint_lemmas(evidence: Evidence) -> set[str]:
    out: set[str] = set()
    for label in evidence.hints:
        out |= lemmas(label)
    return out


def camera_words(evidence: Evidence) -> set[str]:
    return set(CAMERA_WORDS) | {w for t in (evidence.camera, evidence.lens) for w in words(t or "")}


def judge_keywords(keywords: Sequence[str], draft: Draft, evidence: Evidence,
                   human: bool = False, malformed: Collection[str] = ()) -> tuple[list[str], list[Issue]]:
    """Keep the keywords the evidence supports; drop (model) or flag (person) the rest.

    ``malformed`` keywords (split letters, digits only, function words only) are kept
    untouched: they are faults to name, not merely keywords without evidence."""
    supported = evidence_lemmas(evidence)
    cameras = camera_words(evidence) - supported
    classifier = evidence.hints_source is not None
    hinted = hint_lemmas(evidence)
    described = lemmas(f"{draft.caption} {draft.alt_text}")
    kept: list[str] = []
    issues: list[Issue] = []
    for keyword in keywords:
        key = keyword.lower()
        tokens = content_words(keyword) or words(keyword)
        if not tokens or key in supported or keyword in malformed:
            kept.append(keyword)
            continue
        missing = [t for t in tokens if t not in supported and lemma(t) not in supported]
        if not missing:
            kept.append(keyword)
            continue
        if any(t in cameras for t in missing):
            code, why = "camera_keyword", "names the camera, not what is in the photo"
        elif classifier and all(t in hinted or lemma(t) in hinted or t in supported
                                for t in tokens):
            kept.append(keyword)
            continue
        elif not classifier and all(t in described or lemma(t) in described for t in missing):
            kept.append(keyword)
            issues.append(Issue(code="keyword_unverified", field="keywords", severity="unverified",
                                message=f"keyword “{keyword}” is named by the caption only: no "
                                "evidence or classifier confirms it"))
            continue
        else:
            code = "keyword_without_evidence"
            why = (f"“{missing[0]}” is in no evidence" + (" and no classifier hint"
                                                          if classifier else ""))
        if human:
            kept.append(keyword)
            issues.append(Issue(code=code, field="keywords", severity="warning",
                                message=f"keyword “{keyword}”: {why}"))
        else:
            issues.append(Issue(code=code, field="keywords", severity="fixed",
                                message=f"keyword “{keyword}” dropped: {why}",
                                before=keyword, after=None))
    return kept, issues
