"""Guardrails for stage-7 drafts: every model answer and every human edit passes here.

In order: the answer is parsed (:func:`parse_answer`); fields a person edited replace
the model's; the **normalisers** (:mod:`~galleryflow.captioning.normalise`) fix what
needs no model and record each fix; the **keywords** are judged against the evidence
(:mod:`~galleryflow.captioning.keywords`); then every field goes through every check
that applies to it (:mod:`~galleryflow.captioning.checks`: markup, links, hashtags,
emoji, control characters, language, meta-talk, hedging, instructions, echoes;
:mod:`~galleryflow.captioning.timeplace`: time of day, season, place;
:mod:`~galleryflow.captioning.identifiers`), the lengths, the duplicates across the
set, the pending rows and the site, and last the web file name is made unique.

Each check returns :class:`Issue` objects and never raises for bad input: a fault is
data for the repair prompt, the proof and the reviewer. A reviewer's override turns a
matching error into ``overridden`` (the reviewer is the final authority).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from galleryflow.captioning import checks
from galleryflow.captioning.draft import (
    DRAFT_FIELDS,
    TEXT_FIELDS,
    Draft,
    DraftContext,
    Evidence,
    Identifier,
    Issue,
    Severity,
)
from galleryflow.captioning.identifiers import check_identifiers
from galleryflow.captioning.keywords import judge_keywords
from galleryflow.captioning.normalise import (
    make_unique,
    name_stem,
    normalise_draft,
    normalise_keywords,
    strip_extension,
    unique_name,
)
from galleryflow.captioning.text import content_set, overlap, quote, slugify, words
from galleryflow.captioning.timeplace import (
    check_places,
    check_season_words,
    check_time_words,
    time_of_day,
)
from galleryflow.core.settings import DraftLimits

__all__ = [
    "DRAFT_FIELDS", "TEXT_FIELDS", "Draft", "DraftContext", "Evaluation", "Evidence", "Identifier",
    "Issue", "Severity", "check_draft", "check_file_name", "check_lengths", "check_similar",
    "evaluate", "field_states", "name_stem", "normalise_keywords", "parse_answer", "similarity",
    "slugify", "strip_extension", "time_of_day", "unique_name", "words",
]


class Evaluation(BaseModel):
    """A checked draft: the cleaned values, every issue, and each field's state."""

    draft: Draft | None
    issues: list[Issue]
    field_states: dict[str, str]

    @property
    def passed(self) -> bool:
        return self.draft is not None and not any(i.blocking for i in self.issues)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.blocking]

    @property
    def fixable(self) -> list[Issue]:
        """The errors a repair prompt can ask the model to fix."""
        return [i for i in self.errors if i.model_fixable]


def similarity(a: str, b: str) -> float:
    """Share of content words two texts have in common, word order ignored."""
    return overlap(content_set(a), content_set(b))


# --------------------------------------------------------------------------- parsing


def parse_answer(raw: str) -> tuple[Draft | None, list[Issue]]:
    """Malformed JSON or a schema mismatch → ``None`` and the fault."""
    text = (raw or "").strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
    if fenced:  # some models wrap JSON in a Markdown fence despite `format`
        text = fenced.group(1)
    if not text:
        return None, [Issue(code="empty_answer", field="answer", message="the answer was empty")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Issue(
            code="malformed_json", field="answer",
            message=f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
        )]
    if not isinstance(data, dict):
        return None, [Issue(code="schema_invalid", field="answer",
                            message=f"the answer is a JSON {type(data).__name__}, not an object")]
    try:
        draft = Draft.model_validate(data)
    except ValidationError as exc:
        faults = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg'].lower()}"
            for err in exc.errors()
        )
        return None, [Issue(code="schema_invalid", field="answer",
                            message=f"the answer does not match the schema ({faults})")]
    return draft, []


# --------------------------------------------------------------------------- single checks


def check_lengths(draft: Draft, limits: DraftLimits) -> list[Issue]:
    """Caption, alt text, subject and keyword bounds from the settings."""
    issues = []
    for name, low, high in (
        ("caption", limits.caption_min_chars, limits.caption_max_chars),
        ("alt_text", limits.alt_text_min_chars, limits.alt_text_max_chars),
        ("subject", 2, limits.subject_max_chars),
    ):
        size = len(getattr(draft, name))
        if size < low:
            issues.append(Issue(code="too_short", field=name,
                                message=f"{name} has {size} characters; at least {low} needed"))
        elif size > high:
            issues.append(Issue(code="too_long", field=name,
                                message=f"{name} has {size} characters; at most {high} allowed"))
    count = len(draft.keywords)
    if count < limits.keywords_min:
        issues.append(Issue(code="too_few_keywords", field="keywords",
                            message=f"{count} keywords with evidence; at least "
                            f"{limits.keywords_min} needed"))
    elif count > limits.keywords_max:
        issues.append(Issue(code="too_many_keywords", field="keywords",
                            message=f"{count} keywords; at most {limits.keywords_max}"))
    return issues


_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def check_file_name(name: str, taken: Collection[str] = (), max_chars: int = 60) -> list[Issue]:
    """A safe web slug: ASCII, no separators or ``..``, bounded, words (and, when
    ``taken`` is given, not taken: the pipeline makes it unique instead)."""
    def fault(code: str, message: str) -> list[Issue]:
        suggestion = slugify(name, max_chars)
        hint = f" (e.g. “{suggestion}”)" if suggestion and suggestion != name else ""
        return [Issue(code=code, field="file_name", message=message + hint)]

    if not name:
        return [Issue(code="empty_file_name", field="file_name", message="file name is empty")]
    if "/" in name or "\\" in name:
        return fault("path_separator", "file name contains a path separator")
    if ".." in name:
        return fault("dot_dot", "file name contains “..”")
    if not name.isascii():
        return fault("non_ascii", "file name has non-ASCII characters")
    if not _SLUG.fullmatch(name):
        return fault("not_slug", f"file name “{name}” is not lowercase words joined by hyphens")
    if len(name) > max_chars:
        return fault("too_long", f"file name has {len(name)} characters; at most {max_chars}")
    if len(name) < 3:
        return [Issue(code="too_short", field="file_name", message=f"file name “{name}” is too short")]
    split = checks.check_split_letters("file_name", name.replace("-", " "))
    if split:
        return [Issue(code="split_letters", field="file_name",
                      message=f"file name “{name}” is split into single letters")]
    if not re.search(r"[a-z]{2}", name):
        return [Issue(code="digit_only", field="file_name",
                      message=f"file name “{name}” has no words")]
    if name in taken:
        return [Issue(code="duplicate_file_name", field="file_name",
                      message=f"file name “{name}” is already used by another photo or on the site")]
    return []


def check_similar(draft: Draft, other_captions: Sequence[str], other_alt_texts: Sequence[str],
                  threshold: float, previous_caption: str | None = None) -> list[Issue]:
    """Captions and alt texts compared as sets of content words (word order ignored)
    with the set's, the pending rows' and the published ones; alt text with its own caption."""
    issues = []
    caption, alt = content_set(draft.caption), content_set(draft.alt_text)
    if previous_caption and overlap(caption, content_set(previous_caption)) >= threshold:
        issues.append(Issue(code="same_as_previous", field="caption",
                            message="caption is the same as the one the reviewer sent back: "
                            "write a different one"))
    for other in other_captions:
        score = overlap(caption, content_set(other))
        if score >= threshold:
            issues.append(Issue(code="duplicate_caption", field="caption",
                                message=f"caption has {score:.0%} of its words in common with "
                                f"another photo's caption ({quote(other, 50)}); describe what "
                                "makes this photo different"))
            break
    if alt and overlap(alt, caption) >= threshold:
        issues.append(Issue(code="alt_text_repeats_caption", field="alt_text",
                            message="alt text repeats the caption: describe the photo for "
                            "someone who cannot see it, in fewer words"))
    else:
        for other in other_alt_texts:
            if overlap(alt, content_set(other)) >= threshold:
                issues.append(Issue(code="duplicate_alt_text", field="alt_text", severity="warning",
                                    message="alt text is the same as another photo's (fine for "
                                    "near-identical photos)"))
                break
    return issues


# --------------------------------------------------------------------------- per field


def _names(ev: Evidence) -> list[str]:
    """Proper names the evidence gives: the place (town, region, country, each on its own),
    the set's location, its subject and name. Texts are not judged on them (language,
    one-letter words). Not the original's embedded text: a caption copied from it is
    still the drafter's text."""
    parts = [ev.place or "", ev.location or ""]
    return [*(p.strip() for part in parts for p in part.split(",")),
            ev.subject_hint or "", ev.set_name or ""]


def _text_checks(field: str, text: str, ctx: DraftContext, planted: dict[str, str]) -> list[Issue]:
    """Every check that applies to one text field (caption, alt text, subject)."""
    ev, cfg = ctx.evidence, ctx.captioning
    protected = [*ev.places, ev.subject_hint or "", ev.set_name or ""]
    issues = [
        *checks.check_markup(field, text),
        *checks.check_links(field, text),
        *checks.check_hashtags(field, text),
        *checks.check_characters(field, text),
        *checks.check_echo(field, text, planted),
        *checks.check_instructions(field, text),
    ]
    issues += checks.check_meta(field, text)
    issues += checks.check_hedging(field, text)
    issues += checks.check_repeated_words(field, text, protected)
    issues += checks.check_split_letters(field, text)
    issues += checks.check_language(field, text, cfg.language, names=_names(ev))
    issues += check_time_words(field, text, ev, cfg.time_margin_minutes)
    issues += check_season_words(field, text, ev)
    issues += check_places(field, text, ev, cfg.place_radius_km)
    issues += check_identifiers(field, text, ev.identifiers)
    return issues


def _keyword_checks(keywords: Sequence[str], ctx: DraftContext, planted: dict[str, str]
                    ) -> list[Issue]:
    ev = ctx.evidence
    joined = ", ".join(keywords)
    issues = checks.check_keyword_tokens(keywords, ctx.limits.keyword_max_chars,
                                         names=_names(ev))
    for check in (checks.check_markup, checks.check_links, checks.check_hashtags,
                  checks.check_characters, checks.check_instructions, checks.check_meta,
                  checks.check_hedging):
        issues += check("keywords", joined)
    issues += checks.check_echo("keywords", joined, planted)
    issues += check_time_words("keywords", joined, ev, ctx.captioning.time_margin_minutes)
    issues += check_season_words("keywords", joined, ev)
    issues += check_identifiers("keywords", joined, ev.identifiers)
    return issues


def _raw_file_name_checks(raw: str, planted: dict[str, str]) -> list[Issue]:
    """Hostile content in the file name *as given*, before slugifying could hide it."""
    issues = [
        *checks.check_markup("file_name", raw),
        *checks.check_links("file_name", raw),
        *checks.check_characters("file_name", raw),
        *checks.check_instructions("file_name", raw.replace("-", " ")),
    ]
    return issues


def _file_name_checks(name: str, ctx: DraftContext, planted: dict[str, str]) -> list[Issue]:
    ev = ctx.evidence
    spoken = name.replace("-", " ")
    issues = check_file_name(name, (), ctx.limits.file_name_max_chars)
    issues += checks.check_echo("file_name", spoken, planted)
    issues += check_time_words("file_name", spoken, ev, ctx.captioning.time_margin_minutes)
    issues += check_season_words("file_name", spoken, ev)
    issues += check_identifiers("file_name", spoken, ev.identifiers)
    return issues


# --------------------------------------------------------------------------- the pipeline


def _merge_locked(draft: Draft, locked: dict[str, Any]) -> Draft:
    values = draft.model_dump()
    values.update({k: v for k, v in locked.items() if k in DRAFT_FIELDS and v is not None})
    return Draft.model_validate(values)


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for issue in issues:
        key = (issue.code, issue.field, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def check_draft(draft: Draft, ctx: DraftContext, human: bool = False) -> tuple[Draft, list[Issue]]:
    """Normalise, then run every guardrail on a parsed draft; the cleaned draft and the issues.

    ``human``: the values come from a person (the review gate); unsupported
    keywords are then kept with a warning instead of dropped.
    """
    draft = _merge_locked(draft, ctx.locked)
    raw_name = draft.file_name
    planted = checks.planted_text(ctx.evidence)
    draft, issues = normalise_draft(draft, ctx.limits.file_name_max_chars)
    # A keyword with a fault of its own (split letters, a link, a hashtag, "midnight" at
    # noon) is kept to be named and blocked, not merely dropped for want of evidence.
    malformed = {k for k in draft.keywords if _keyword_checks([k], ctx, planted)}
    keywords, judged = judge_keywords(draft.keywords, draft, ctx.evidence, human=human,
                                      malformed=malformed)
    issues += judged
    draft = draft.model_copy(update={"keywords": keywords})

    for name in TEXT_FIELDS:
        issues += _text_checks(name, getattr(draft, name), ctx, planted)
    issues += _keyword_checks(draft.keywords, ctx, planted)
    issues += _raw_file_name_checks(raw_name, planted)
    issues += _file_name_checks(draft.file_name, ctx, planted)
    issues += check_lengths(draft, ctx.limits)
    issues += check_similar(draft, ctx.other_captions, ctx.other_alt_texts,
                            ctx.limits.similarity_threshold, ctx.evidence.previous_caption)
    # Last: a good name that is taken gets a free variant, no model call.
    if not any(i.field == "file_name" and i.blocking for i in issues):
        unique, fixed = make_unique(draft.file_name, ctx.is_taken, ctx.evidence.taken_at,
                                    ctx.limits.file_name_max_chars)
        draft = draft.model_copy(update={"file_name": unique})
        issues += fixed
    # A person's own values stand: the model is not judged on fields it does not set.
    if not human:
        issues = [i for i in issues if i.field not in ctx.locked]
    issues = apply_overrides(_dedupe(issues), ctx.overrides)
    return draft, issues


def apply_overrides(issues: list[Issue], overrides: dict[tuple[str, str], str]) -> list[Issue]:
    """Errors a reviewer declared false positives become ``overridden`` (with the reason)."""
    if not overrides:
        return issues
    out = []
    for issue in issues:
        reason = overrides.get((issue.field, issue.code)) or overrides.get(("*", issue.code))
        if issue.blocking and reason:
            issue = issue.model_copy(update={
                "severity": "overridden",
                "message": f"{issue.message} — overridden by the reviewer: {reason}"})
        out.append(issue)
    return out


def field_states(issues: Sequence[Issue], locked: Collection[str] = (),
                 repaired: Collection[str] = ()) -> dict[str, str]:
    """Each draft field's state, the first that applies: ``edited`` (a person's value),
    ``blocked``, ``repaired`` (the model was asked again), ``overridden``, ``unverified``
    (keywords the caption alone names), ``fixed`` (normalised, no model call), ``accepted``."""
    blocked_all = any(i.field == "answer" and i.blocking for i in issues)
    states = {}
    for name in DRAFT_FIELDS:
        mine = [i for i in issues if i.field == name]
        if name in locked:
            states[name] = "edited"
        elif blocked_all or any(i.blocking for i in mine):
            states[name] = "blocked"
        elif name in repaired:
            states[name] = "repaired"
        elif any(i.severity == "overridden" for i in mine):
            states[name] = "overridden"
        elif any(i.severity == "unverified" for i in mine):
            states[name] = "unverified"
        elif any(i.severity == "fixed" for i in mine):
            states[name] = "fixed"
        else:
            states[name] = "accepted"
    return states


def evaluate(raw: str, ctx: DraftContext) -> Evaluation:
    """Parse a raw model answer and run every guardrail on it."""
    draft, issues = parse_answer(raw)
    if draft is None:
        return Evaluation(draft=None, issues=issues, field_states=field_states(issues, ctx.locked))
    draft, issues = check_draft(draft, ctx)
    return Evaluation(draft=draft, issues=issues, field_states=field_states(issues, ctx.locked))


def preload() -> None:
    """Load what the checks read on first use, by checking one made-up draft: emoji's
    data, the noun lemma table, the gazetteer and its index by name (the last two from
    ``GALLERYFLOW_HOME/cache``), the HTML sanitiser. The warm process
    (``galleryflow.app.warm``) does it once for all the runs it forks, which otherwise
    paid it each at their first draft (~0.25 s of one core, on stage 7's path). What
    is loaded is the installed packages' data: the same whichever home a run is for."""
    from datetime import datetime

    evidence = Evidence(taken_at=datetime(2026, 6, 1, 9, 0), time_of_day="morning",
                        latitude=46.6242, longitude=8.0414, place="Grindelwald, Bern, Switzerland")
    check_draft(Draft(caption="Fishing boats on the lake below Grindelwald in the morning.",
                      alt_text="Boats on a calm lake below mountains", keywords=["boats", "lake"],
                      subject="boats below Grindelwald", file_name="grindelwald-boats-morning"),
                DraftContext(evidence=evidence, other_captions=["Boats in a harbour at dusk."]))
