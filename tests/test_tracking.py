"""Weights & Biases tracking: an offline run is written locally; disabled logs nothing."""

import numpy as np

from nucleaizer.tracking import Tracker


def test_offline_run_writes_its_files_in_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = Tracker(tmp_path, name="t", mode="offline", config={"seed": 0})
    assert tracker.enabled
    tracker.log_stage("styles", {"k": 3, "sizes": {"a": 1}, "note": "text"}, seconds=1.5)
    tracker.log_images("samples", {"one": np.zeros((8, 8, 3), np.uint8)})
    tracker.log_table("ga", [{"generation": 0, "best": 0.5}])
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].rglob("*.wandb"))


def test_disabled_tracker_logs_nothing(tmp_path):
    tracker = Tracker(tmp_path, name="t", mode="disabled")
    assert not tracker.enabled
    tracker.log_stage("styles", {"k": 3}, seconds=1.0)
    tracker.finish()
    assert not (tmp_path / "wandb").exists()
