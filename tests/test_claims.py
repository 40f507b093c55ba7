"""Claims as data: checks assert and record, reports record, sanity checks never count."""

import json
import math

import pytest

from bench.claims import Run, summarise
from diffnotes import claims
from diffnotes.profile import profile


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv("DIFFNOTES_CLAIMS_LOG", str(log))
    monkeypatch.setenv("DIFFNOTES_PROFILE", "ci")
    monkeypatch.setenv("DIFFNOTES_SEED", "3")
    return log


def test_check_passes_records_and_returns_the_margin(env):
    log = claims.chapter("01-test")
    assert log.check("ratio", 2.0, ">=", 1.5, paper="3.17") == pytest.approx(0.5)
    assert log.check("gap", 0.08, "<", 0.1) == pytest.approx(0.02)
    rec = json.loads(env.read_text().splitlines()[0])
    assert rec["chapter"] == "01-test" and rec["passed"] and rec["paper"] == "3.17"
    assert rec["profile"] == "ci" and rec["seed"] == 3 and rec["kind"] == "claim"


@pytest.mark.parametrize(
    "value, op, threshold", [(1.0, ">", 1.0), (1.2, "<=", 1.1), (0.5, ">=", 0.6), (2, "<", 2)]
)
def test_check_fails_with_a_message_naming_the_claim(env, value, op, threshold):
    log = claims.chapter("01-test")
    with pytest.raises(claims.ClaimError, match="claim 'x' failed"):
        log.check("x", value, op, threshold)
    rec = json.loads(env.read_text().splitlines()[-1])
    assert rec["passed"] is False and rec["margin"] <= 0  # the failure is recorded too


def test_margin_sign():
    assert claims.margin(3.0, ">=", 2.0) == 1.0
    assert claims.margin(1.0, "<", 2.0) == 1.0
    assert claims.margin(3.0, "<=", 2.0) == -1.0


def test_bad_input_is_refused_before_recording(env):
    log = claims.chapter("01-test")
    with pytest.raises(ValueError, match="op of claim 'x' must be one of"):
        log.check("x", 1.0, "==", 1.0)
    with pytest.raises(ValueError, match="value of claim 'x' is NaN"):
        log.check("x", math.nan, "<", 1.0)
    with pytest.raises(ValueError, match="threshold of claim 'x' must be a number"):
        log.check("x", 1.0, "<", "one")
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        log.check("", 1.0, "<", 2.0)
    assert not env.exists() or env.read_text() == ""
    with pytest.raises(ValueError, match="chapter name"):
        claims.chapter("")


def test_reports_and_sanity_are_not_claims(env):
    log = claims.chapter("01-test")
    log.report("fd ratio", 1.4, paper="'negligible'")
    log.sanity("finite", True)
    with pytest.raises(AssertionError, match="sanity check failed: positive"):
        log.sanity("positive", False)
    assert [r.kind for r in log.records] == ["report"] and log.claims == []


def test_module_functions_use_the_current_chapter(env):
    claims.chapter("02-test")
    claims.check("a", 1.0, "<", 2.0, evidence="trained")
    claims.report("b", 5.0)
    text = str(claims.table(robustness=False).data)
    assert "| a | — | 1 | < 2 (margin +1) | trained |" in text
    assert "| b | — | 5 | reported | — |" in text


def test_evidence_is_recorded_and_checked(env):
    log = claims.chapter("04-test")
    log.check("a", 1.0, "<", 2.0, evidence="exact")
    log.report("b", 2.0, evidence="timing")
    assert [r.evidence for r in log.records] == ["exact", "timing"]
    for bad in ("train", "", "Trained"):
        with pytest.raises(ValueError, match="evidence of claim 'c' must be one of"):
            log.check("c", 1.0, "<", 2.0, evidence=bad)
        with pytest.raises(ValueError, match="evidence of claim 'c' must be one of"):
            log.report("c", 1.0, evidence=bad)
    assert [r.name for r in log.records] == ["a", "b"]


def test_robustness_column_from_a_summary(tmp_path, monkeypatch):
    summary = {
        "profile": "book",
        "claims": [
            dict(chapter="03-test", name="a", passes=6, runs=6, worst_margin=0.25),
        ],
    }
    path = tmp_path / "robust.json"
    path.write_text(json.dumps(summary))
    assert claims.load_robustness(path) == {"03-test": {"a": "6/6 book runs, worst margin +0.25"}}
    monkeypatch.setattr(claims, "ROBUSTNESS_FILE", path)
    claims.chapter("03-test").check("a", 1.0, "<", 2.0)
    assert "6/6 book runs, worst margin +0.25" in str(claims.table().data)
    path.write_text("[]")
    with pytest.raises(ValueError, match="not a bench.claims summary"):
        claims.load_summary(path)


def test_seed_from_the_environment(monkeypatch):
    assert profile().seed == 3
    monkeypatch.delenv("DIFFNOTES_SEED")
    assert profile().seed == 0
    for bad in ("-1", "x", "1.5"):
        monkeypatch.setenv("DIFFNOTES_SEED", bad)
        with pytest.raises(ValueError, match="DIFFNOTES_SEED=.*allowed values"):
            profile()


def test_runner_summary_counts_a_missing_claim_as_a_failure(tmp_path):
    def rec(name, value, passed=True, kind="claim"):
        return dict(
            chapter="c", name=name, value=value, kind=kind, op="<", threshold=2.0,
            margin=2.0 - value, passed=passed, paper=None,
        )  # fmt: skip

    ok = Run(tmp_path / "c.ipynb", 0, 1, records=[rec("a", 1.0), rec("r", 7.0, kind="report")])
    bad = Run(tmp_path / "c.ipynb", 1, 2, records=[rec("a", 3.0, passed=False)])
    crashed = Run(tmp_path / "c.ipynb", 2, 1, records=[])
    s = summarise([ok, bad, crashed])
    (a,) = s["claims"]
    assert (a["passes"], a["runs"], a["min"], a["max"]) == (1, 3, 1.0, 3.0)
    assert a["worst_margin"] == -1.0
    (r,) = s["reports"]
    assert r["median"] == 7.0 and r["runs"] == 3
