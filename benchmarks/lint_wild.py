"""Score ``lossaudit lint`` on the wild corpus (issue 21): public focal losses restated as fixtures.

    python benchmarks/lint_wild.py [--split dev|heldout|all] [--details] [--json OUT] [--timeout S]

Each fixture of ``tests/fixtures/wild/manifest.yaml`` in the chosen split is linted in its own
process (``lossaudit lint TARGET --format json --isolated`` plus its ``--init KEY=VALUE`` settings),
with a wall-clock limit per target so a hang cannot block the run. Only findings of severity
``error`` or ``warning`` count. Three scores are printed:

- correct ones clean: correct fixtures with no error or warning finding;
- buggy ones flagged: buggy fixtures with at least one error or warning finding;
- defects reported: defects (counted one by one) for which a finding with one of the manifest's
  acceptable rule codes is present at error or warning.

``--details`` adds one line per fixture (expected defects and their codes against the codes lint
reported); ``--json OUT`` writes the per-fixture results. Develop probes against ``dev`` only: the
``heldout`` split is measured before and after, never inspected in between (tests/fixtures/wild/README.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "tests" / "fixtures" / "wild" / "manifest.yaml"
COUNTED = ("error", "warning")


def load_fixtures(manifest: Path, split: str) -> list[dict]:
    fixtures = yaml.safe_load(manifest.read_text())["fixtures"]
    return [fixture for fixture in fixtures if split == "all" or fixture["split"] == split]


def lint_command(fixture: dict) -> list[str]:
    command = [sys.executable, "-m", "lossaudit", "lint", fixture["target"], "--format", "json", "--isolated", "--jobs", "1"]
    for key, value in (fixture.get("init") or {}).items():
        command += ["--init", f"{key}={value!r}"]
    return command


def run_lint(fixture: dict, timeout: float) -> dict:
    """lint's JSON result for one fixture's target: status, findings (code, severity) and the seconds
    it took; a timeout or an unreadable output is a status of its own with no findings."""
    start = time.perf_counter()
    try:
        done = subprocess.run(lint_command(fixture), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "findings": [], "seconds": round(time.perf_counter() - start, 2)}
    seconds = round(time.perf_counter() - start, 2)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"status": f"no-json (exit {done.returncode})", "findings": [], "seconds": seconds, "stderr": done.stderr[-400:]}
    targets = report.get("targets") or [{}]
    result = targets[0]
    findings = [{"code": finding["code"], "severity": finding["severity"], "message": finding.get("message", "")} for finding in result.get("findings", [])]
    return {"status": result.get("status", "unknown"), "findings": findings, "seconds": seconds, "exit": done.returncode}


def score_fixture(fixture: dict, outcome: dict) -> dict:
    counted = sorted({finding["code"] for finding in outcome["findings"] if finding["severity"] in COUNTED})
    defects = [
        {"id": defect["id"], "kind": defect["kind"], "rules": defect["rules"], "reported": bool(set(defect["rules"]) & set(counted))}
        for defect in fixture["defects"]
    ]
    return {
        "module": fixture["module"],
        "target": fixture["target"],
        "split": fixture["split"],
        "correct": fixture["correct"],
        "status": outcome["status"],
        "seconds": outcome["seconds"],
        "counted_codes": counted,
        "all_findings": [f"{finding['code']}:{finding['severity']}" for finding in outcome["findings"]],
        "clean": not counted,
        "defects": defects,
    }


def summary(results: list[dict]) -> dict:
    correct = [result for result in results if result["correct"]]
    buggy = [result for result in results if not result["correct"]]
    defects = [defect for result in buggy for defect in result["defects"]]
    return {
        "correct_clean": [sum(result["clean"] for result in correct), len(correct)],
        "buggy_flagged": [sum(not result["clean"] for result in buggy), len(buggy)],
        "defects_reported": [sum(defect["reported"] for defect in defects), len(defects)],
    }


def percent(pair: list[int]) -> str:
    return f"{pair[0]}/{pair[1]}" + (f" ({100 * pair[0] / pair[1]:.0f}%)" if pair[1] else "")


def detail_line(result: dict) -> str:
    name = Path(result["module"]).stem
    if result["correct"]:
        expected = "correct (expects no error/warning)"
        verdict = "clean" if result["clean"] else "FALSE ALARM"
    else:
        expected = "; ".join(
            f"{defect['id']} {defect['kind']} [{','.join(defect['rules'])}] {'hit' if defect['reported'] else 'MISS'}" for defect in result["defects"]
        )
        verdict = "flagged" if not result["clean"] else "NOT FLAGGED"
    got = ", ".join(result["all_findings"]) or "no findings"
    return f"{name:48s} {verdict:11s} expected: {expected} | got ({result['status']}): {got}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "heldout", "all"), default="dev")
    parser.add_argument("--details", action="store_true", help="one line per fixture: expected defects and codes against lint's findings")
    parser.add_argument("--json", metavar="OUT", type=Path, help="write the per-fixture results and the scores to this file")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for one target's lint run (default 60)")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    args = parser.parse_args()
    fixtures = load_fixtures(args.manifest, args.split)
    results = [score_fixture(fixture, run_lint(fixture, args.timeout)) for fixture in fixtures]
    scores = summary(results)
    if args.details:
        for result in results:
            print(detail_line(result))
        print()
    print(f"split: {args.split} ({len(results)} fixtures)")
    print(f"correct ones clean:   {percent(scores['correct_clean'])}")
    print(f"buggy ones flagged:   {percent(scores['buggy_flagged'])}")
    print(f"defects reported:     {percent(scores['defects_reported'])}")
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1
    print("lint statuses:        " + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())))
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "scores": scores, "fixtures": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
