"""Stage 7's guardrails on the labelled answer corpus (tests/data/guardrail_corpus.json).

    python bench/guardrails.py [--corpus PATH] [--markdown] [--show-misses]

Prints, per class of fault, the precision and recall of *blocking* (an answer counts as
blocked for a class when an error of that class's code is raised), the share of good
answers accepted unchanged (passed, no fix) and the share of cosmetic faults fixed with
no model call (passed, with the expected fix). No model is involved: each answer is
judged as the model's first answer would be, against its evidence profile.

Targets (issue 12): every hostile class blocked (recall 1.0), good answers accepted
unchanged >= 97 %, cosmetic faults fixed deterministically >= 95 %.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galleryflow.captioning.guardrails import (  # noqa: E402
    DraftContext,
    Evaluation,
    Evidence,
    evaluate,
)

CORPUS = ROOT / "tests" / "data" / "guardrail_corpus.json"


def profile_evidence(profile: dict[str, Any]) -> Evidence:
    data = dict(profile)
    if data.get("taken_at"):
        data["taken_at"] = datetime.fromisoformat(data["taken_at"])
    return Evidence.model_validate(data)


def judge(entry: dict[str, Any], evidence: Evidence) -> Evaluation:
    return evaluate(json.dumps(entry["answer"]), DraftContext(evidence=evidence))


def unchanged(entry: dict[str, Any], result: Evaluation) -> bool:
    return (result.passed and result.draft is not None
            and not any(i.severity == "fixed" for i in result.issues)
            and result.draft.model_dump() == entry["answer"])


def run(corpus_path: Path = CORPUS) -> dict[str, Any]:
    corpus = json.loads(corpus_path.read_text(encoding="utf-8"))
    evidence = {name: profile_evidence(p) for name, p in corpus["profiles"].items()}
    results = []
    started = time.perf_counter()
    for entry in corpus["answers"]:
        result = judge(entry, evidence[entry["profile"]])
        results.append((entry, result))
    seconds = time.perf_counter() - started
    good = [(e, r) for e, r in results if e["label"] == "good"]
    cosmetic = [(e, r) for e, r in results if e["label"] == "cosmetic"]
    hostile = [(e, r) for e, r in results if e["label"] == "hostile"]
    classes: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "n": 0})
    misses = []
    for entry, result in results:
        raised = {i.code for i in result.errors}
        expected = set(entry["expect"]) if entry["label"] == "hostile" else set()
        for code in expected:
            classes[code]["n"] += 1
            if code in raised:
                classes[code]["tp"] += 1
            else:
                classes[code]["fn"] += 1
                misses.append((entry, result, f"not blocked as {code}"))
        for code in raised - expected:
            if code in classes or entry["label"] != "hostile":
                classes[code]["fp"] += 1
            if entry["label"] != "hostile":
                misses.append((entry, result, f"wrongly blocked as {code}"))
    for entry, result in good:
        if result.passed and not unchanged(entry, result):
            misses.append((entry, result, "good answer changed"))
    fixed_ok = 0
    for entry, result in cosmetic:
        codes = {i.code for i in result.issues if i.severity == "fixed"}
        if result.passed and set(entry["expect"]) <= codes:
            fixed_ok += 1
        elif result.passed:
            misses.append((entry, result, f"fix {entry['expect']} not recorded"))
    hostile_blocked = sum(not r.passed for _, r in hostile)
    return {
        "answers": len(results), "good": len(good), "cosmetic": len(cosmetic),
        "hostile": len(hostile), "seconds": seconds,
        "good_unchanged": sum(unchanged(e, r) for e, r in good) / max(1, len(good)),
        "good_passed": sum(r.passed for _, r in good) / max(1, len(good)),
        "cosmetic_fixed": fixed_ok / max(1, len(cosmetic)),
        "hostile_blocked": hostile_blocked / max(1, len(hostile)),
        "classes": {code: dict(v) for code, v in sorted(classes.items())},
        "misses": misses,
    }


def table(report: dict[str, Any]) -> str:
    lines = ["| class (code) | hostile answers | recall | precision |", "|---|---|---|---|"]
    for code, c in report["classes"].items():
        if not c["n"] and not c["fp"]:
            continue
        recall = c["tp"] / c["n"] if c["n"] else float("nan")
        flagged = c["tp"] + c["fp"]
        precision = c["tp"] / flagged if flagged else float("nan")
        lines.append(f"| `{code}` | {c['n']} | {recall:.2f} | {precision:.2f} |")
    lines += [
        "",
        f"{report['answers']} answers ({report['good']} good, {report['cosmetic']} cosmetic, "
        f"{report['hostile']} hostile), judged in {report['seconds']:.1f} s "
        f"({1000 * report['seconds'] / max(1, report['answers']):.1f} ms per answer, models "
        "loaded once).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| hostile answers blocked | {report['hostile_blocked']:.1%} | 100 % |",
        f"| good answers accepted unchanged | {report['good_unchanged']:.1%} | ≥ 97 % |",
        f"| cosmetic faults fixed with no model call | {report['cosmetic_fixed']:.1%} | ≥ 95 % |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    report = run(args.corpus)
    print(table(report))
    if args.show_misses:
        for entry, result, why in report["misses"]:
            print(f"\n{entry['id']} [{entry['kind']}] {why}")
            for issue in result.issues:
                if issue.severity in ("error", "fixed"):
                    print(f"   {issue.severity} {issue.field} {issue.code}: {issue.message}")


if __name__ == "__main__":
    main()
