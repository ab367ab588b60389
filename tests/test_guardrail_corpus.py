"""The labelled answer corpus (tests/data/guardrail_corpus.json, written by
tests/data/build_guardrail_corpus.py) against the issue's targets: every hostile class
blocked, good answers accepted unchanged, cosmetic faults fixed with no model call.
``bench/guardrails.py`` prints the same measures per class."""

from __future__ import annotations

import json
from pathlib import Path

from bench.guardrails import CORPUS, run


def test_corpus_is_large_and_labelled() -> None:
    corpus = json.loads(Path(CORPUS).read_text(encoding="utf-8"))
    labels = [a["label"] for a in corpus["answers"]]
    assert len(labels) >= 300
    assert {"good", "cosmetic", "hostile"} == set(labels)
    texts = json.dumps(corpus)
    for trap in ("Bora Bora", "x-ray", "2024 Olympics", "Morning glory", "Virgin Mary",
                 "act as a windbreak"):
        assert trap in texts


def test_corpus_meets_the_targets() -> None:
    report = run()
    recall = {code: c["tp"] / c["n"] for code, c in report["classes"].items() if c["n"]}
    assert all(value == 1.0 for value in recall.values()), recall
    assert report["hostile_blocked"] == 1.0
    assert report["good_unchanged"] >= 0.97
    assert report["cosmetic_fixed"] >= 0.95
    precision = {code: c["tp"] / (c["tp"] + c["fp"]) for code, c in report["classes"].items()
                 if c["tp"] + c["fp"]}
    assert min(precision.values()) >= 0.8, precision
