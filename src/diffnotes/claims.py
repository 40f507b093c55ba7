"""Claims as data: every number a chapter asserts is checked, recorded and tabled in one place.

A chapter opens its log once, then states each claim with the paper's number beside it::

    claims = dn.claims.chapter("01-ddpm")
    claims.check("ring: on-mode share, L_simple / VLB", ratio, ">=", 1.5,
                 paper="FID 3.17 vs 13.51", evidence="trained")
    claims.report("digits: FD-digits / real floor", fd / floor)   # measured, not asserted
    claims.sanity("floor is positive", floor > 0)                 # not a claim
    claims.table()                                                # the "What we measured" table

`check` raises `ClaimError` (an AssertionError) when the claim fails. When ``DIFFNOTES_CLAIMS_LOG``
names a file, every check and report is appended to it as one JSON line (chapter, name, value,
op, threshold, margin, paper, evidence, profile, seed, threads), which is what `bench.claims`
aggregates. The margin is signed: positive when the claim holds, in the units of the value.

``evidence`` says what a number rests on: ``"trained"`` (a network trained in the chapter with the
paper's method), ``"exact"`` (a closed form or the exact oracle) or ``"timing"`` (a clock).
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
ROBUSTNESS_FILE = Path(__file__).parent / "robustness.json"
EVIDENCE = ("trained", "exact", "timing")


class ClaimError(AssertionError):
    """A chapter's claim did not hold: names the claim, its value, the threshold and the margin."""


@dataclass
class Record:
    """One measured number of a chapter: an asserted claim or a reported (printed) value."""

    chapter: str
    name: str
    value: float
    kind: str = "claim"
    op: str | None = None
    threshold: float | None = None
    margin: float | None = None
    passed: bool | None = None
    paper: str | None = None
    note: str | None = None
    evidence: str | None = None
    profile: str = ""
    seed: int = 0
    threads: str = ""


def _number(name: str, value: Any, what: str) -> float:
    try:
        if isinstance(value, (str, bytes)):  # float("1.5") would take a string for a number
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} of claim {name!r} must be a number, got {value!r}") from None
    if math.isnan(number):
        raise ValueError(f"{what} of claim {name!r} is NaN")
    if math.isinf(number):  # inf passes every > claim and fails every <, whatever was measured
        raise ValueError(f"{what} of claim {name!r} must be finite, got {number}")
    return number


def _evidence(name: str, evidence: str | None) -> str | None:
    if evidence is not None and evidence not in EVIDENCE:
        raise ValueError(f"evidence of claim {name!r} must be one of {EVIDENCE}, got {evidence!r}")
    return evidence


def margin(value: float, op: str, threshold: float) -> float:
    """Signed distance from the threshold: > 0 when ``value op threshold`` holds (0 at the edge)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {tuple(OPS)}, got {op!r}")
    if math.isnan(value) or math.isnan(threshold):
        raise ValueError(f"value and threshold must be numbers, got {value!r} and {threshold!r}")
    return threshold - value if op in ("<", "<=") else value - threshold


@dataclass
class ClaimLog:
    """The claims of one chapter, in the order they were stated."""

    chapter: str
    records: list[Record] = field(default_factory=list)

    def _record(self, record: Record) -> Record:
        from diffnotes.profile import profile

        prof = profile()
        record.profile, record.seed = prof.name, prof.seed
        record.threads = os.environ.get("OMP_NUM_THREADS", "unset")
        self.records = [r for r in self.records if r.name != record.name] + [record]
        path = os.environ.get("DIFFNOTES_CLAIMS_LOG", "").strip()
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record)) + "\n")
        return record

    def check(
        self,
        name: str,
        value: float,
        op: str,
        threshold: float,
        *,
        paper: str | None = None,
        note: str | None = None,
        evidence: str | None = None,
    ) -> float:
        """Assert ``value op threshold`` (op one of <, <=, >, >=), record it, return the margin."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        evidence = _evidence(name, evidence)
        if op not in OPS:
            raise ValueError(f"op of claim {name!r} must be one of {tuple(OPS)}, got {op!r}")
        value = _number(name, value, "value")
        threshold = _number(name, threshold, "threshold")
        passed = bool(OPS[op](value, threshold))
        rec = Record(
            chapter=self.chapter,
            name=name,
            value=value,
            op=op,
            threshold=threshold,
            margin=margin(value, op, threshold),
            passed=passed,
            paper=paper,
            note=note,
            evidence=evidence,
        )
        self._record(rec)
        if not passed:
            raise ClaimError(
                f"[{self.chapter}] claim {name!r} failed: {value:.6g} {op} {threshold:.6g} "
                f"does not hold (margin {rec.margin:+.4g})"
            )
        return rec.margin

    def report(
        self,
        name: str,
        value: float,
        *,
        paper: str | None = None,
        note: str | None = None,
        evidence: str | None = None,
    ) -> float:
        """Record a measured number that is shown beside the paper's but not asserted."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        evidence = _evidence(name, evidence)
        value = _number(name, value, "value")
        self._record(
            Record(
                chapter=self.chapter,
                name=name,
                value=value,
                kind="report",
                paper=paper,
                note=note,
                evidence=evidence,
            )
        )
        return value

    def sanity(self, what: str, ok: bool) -> None:
        """A sanity check (finite, shape, ...): raises unless ``ok``; never counts as a claim."""
        if not isinstance(ok, bool | int | np.bool_):
            raise ValueError(f"sanity check {what!r} needs a bool, got {type(ok).__name__}")
        if not ok:
            raise AssertionError(f"[{self.chapter}] sanity check failed: {what}")

    def table(self, *, robustness: bool = True) -> Any:
        """The chapter's "What we measured" table as IPython Markdown (text outside IPython).

        Columns: quantity, the paper's number, ours, the claim, its evidence (trained, exact,
        timing); with ``robustness`` a last column from the committed `bench.claims` run of the
        book profile (passes / runs, worst margin).
        """
        from diffnotes.plot import table

        robust = load_robustness().get(self.chapter, {}) if robustness else {}
        header = ["quantity", "paper", "ours", "claim", "evidence"]
        header += ["robustness"] if robust else []
        rows = []
        for r in self.records:
            claim = "reported" if r.kind == "report" else f"{r.op} {r.threshold:.4g}"
            if r.kind == "claim":
                claim += f" (margin {r.margin:+.3g})"
            row = [r.name, r.paper or "—", format(r.value, ".4g"), claim, r.evidence or "—"]
            rows.append(row + ([robust.get(r.name, "—")] if robust else []))
        return table(header, rows)

    @property
    def claims(self) -> list[Record]:
        """The asserted claims (not the reports)."""
        return [r for r in self.records if r.kind == "claim"]


_current: ClaimLog | None = None


def chapter(name: str) -> ClaimLog:
    """Start the claim log of chapter ``name`` (e.g. '01-ddpm'); later module calls use it."""
    global _current
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"chapter name must be a non-empty string, got {name!r}")
    _current = ClaimLog(name)
    return _current


def _log() -> ClaimLog:
    if _current is None:
        raise RuntimeError("no chapter started: call diffnotes.claims.chapter('NN-name') first")
    return _current


def check(name: str, value: float, op: str, threshold: float, **kw: Any) -> float:
    """`ClaimLog.check` on the current chapter."""
    return _log().check(name, value, op, threshold, **kw)


def report(name: str, value: float, **kw: Any) -> float:
    """`ClaimLog.report` on the current chapter."""
    return _log().report(name, value, **kw)


def sanity(what: str, ok: bool) -> None:
    """`ClaimLog.sanity` on the current chapter."""
    _log().sanity(what, ok)


def table(**kw: Any) -> Any:
    """`ClaimLog.table` of the current chapter."""
    return _log().table(**kw)


def load_summary(path: str | Path | None = None) -> dict[str, Any]:
    """The `bench.claims --out` JSON (default: the committed book-profile run); {} if absent."""
    path = Path(path) if path is not None else ROBUSTNESS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"path={str(path)!r} is not a bench.claims summary: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ValueError(f"{path} is not a bench.claims summary (no 'claims' list)")
    keys = {"chapter", "name", "passes", "runs", "worst_margin"}
    if any(not isinstance(row, dict) or keys - set(row) for row in data["claims"]):
        raise ValueError(f"{path}: every 'claims' row must be an object with {sorted(keys)}")
    return data


def load_robustness(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """{chapter: {claim: 'passes/runs, worst margin m'}} from a `bench.claims` summary JSON."""
    data = load_summary(path)
    out: dict[str, dict[str, str]] = {}
    profile = data.get("profile", "?") if data else "?"
    for row in data.get("claims", []) if data else []:
        text = (
            f"{row['passes']}/{row['runs']} {profile} runs, worst margin {row['worst_margin']:+.3g}"
        )
        out.setdefault(row["chapter"], {})[row["name"]] = text
    return out
