"""The reading list's `--report_to="wandb"`, offline: W&B when installed, else one warning line
and the CSV log (issue #17). Data come from a local image folder, never the Hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from unittest import mock

import pytest
from test_lora import flags  # the trainer flags of the LoRA tests

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from diffnotes.lora import train as train_lora  # noqa: E402
from diffnotes.lora.report import read_log, trackers_for  # noqa: E402

HAS_WANDB = importlib.util.find_spec("wandb") is not None
WARNING = "--report_to wandb: wandb is not installed; logging to the CSV log only"


def test_trackers_for_wandb_absent_and_present() -> None:
    with mock.patch("importlib.util.find_spec", return_value=None):
        assert trackers_for("wandb") == ([], [WARNING])
        assert trackers_for("none") == ([], [])
        assert trackers_for("all") == ([], [])  # 'all' takes what is there, silently
    with mock.patch("importlib.util.find_spec", return_value=object()):
        assert trackers_for("wandb") == (["wandb"], [])


def run(tiny: Path, shapes_dir: Path, out: Path) -> None:
    train_lora(**flags(tiny, shapes_dir, out, max_train_steps=2, report_to="wandb"))


@pytest.mark.skipif(HAS_WANDB, reason="wandb is installed: the other test covers it")
def test_wandb_absent_falls_back_to_the_csv_log(tiny, shapes_dir, tmp_path, capsys) -> None:
    run(tiny, shapes_dir, tmp_path / "out")
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1, err
    log = read_log(tmp_path / "out" / "logs" / "train_log.csv")
    assert [row["step"] for row in log] == [1.0, 2.0]


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install wandb)")
def test_wandb_installed_logs_offline(tiny, shapes_dir, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(tiny, shapes_dir, tmp_path / "out")
    assert WARNING not in capsys.readouterr().err
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run was written"
    assert len(read_log(tmp_path / "out" / "logs" / "train_log.csv")) == 2
