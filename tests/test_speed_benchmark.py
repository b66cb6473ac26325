"""benchmarks/speed.py: every measurement on tiny settings gives a positive rate and the fields the report needs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # run_measurement sets the process's thread count


@pytest.fixture(scope="module")
def images(speed):
    return speed.procedural_images(["fluorescence", "he"], 96)


def check_row(row: dict, unit: str) -> None:
    assert row["unit"] == unit
    assert row["value"] > 0
    assert row["peak_rss_mb"] > 0
    assert row["torch_threads"] == 1
    assert row["peak_cuda_mb"] is None
    assert row["name"] and row["notes"] and row["data"] and isinstance(row["config"], dict)
    json.dumps(row, default=float)  # the report is JSON


@pytest.mark.parametrize("kind", ["classical", "maskrcnn"])
def test_inference(speed, images, kind):
    row = speed.run_measurement("inference", {"kind": kind, "images": images, "profile": "tiny"}, threads=1)
    check_row(row, "MP/s")
    assert [r["image"] for r in row["details"]["images"]] == ["fluorescence_0", "he_1"]


def test_segmenter_training(speed, images):
    spec = {
        "images": images,
        "profile": "tiny",
        "warmup": 1,
        "steps": 1,
        "overrides": ["segmenter.train.crop_size=64", "segmenter.train.batch_size=1"],
    }
    row = speed.run_measurement("segmenter_training", spec, threads=1)
    check_row(row, "steps/s")
    assert row["details"]["timed_steps"] == 1 and len(row["details"]["step_seconds"]) == 2
    assert row["config"]["crop_size"] == 64 and row["precision"] == "32-true"


def test_pix2pix_training(speed, images):
    row = speed.run_measurement(
        "pix2pix_training", {"images": images, "profile": "tiny", "warmup": 1, "steps": 2}, threads=1
    )
    check_row(row, "steps/s")
    assert row["details"]["timed_steps"] == 2 and row["details"]["train_record"]["steps"] == 3


def test_ga(speed, images):
    spec = {
        "images": images,
        "profile": "tiny",
        "population": 4,
        "generations": 2,
        "workers": 1,
        "crop_px": 64,
    }
    row = speed.run_measurement("ga", spec, threads=1)
    check_row(row, "evaluations/s")
    assert row["details"]["images_per_evaluation"] == 2 and row["details"]["evaluations"] >= 4


def test_demo_timings_and_markdown(speed, tmp_path):
    missing = speed.demo_timings(tmp_path / "report.json")
    assert missing["measured"] is False
    report = {
        "profile": "demo",
        "style": "auto",
        "total_seconds": 600.0,
        "stages": {"preseg": {"seconds": 216.0, "summary": {}}, "stylegen": {"seconds": 85.2, "summary": {}}},
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    demo = speed.demo_timings(tmp_path / "report.json")
    assert (
        demo["measured"]
        and demo["total_seconds"] == 600.0
        and demo["stages"] == {"preseg": 216.0, "stylegen": 85.2}
    )
    result = {
        "date": "2026-01-01T00:00:00",
        "machine": speed.machine(),
        "commit": "abc",
        "device": "cpu",
        "threads": 1,
        "quick": True,
        "measurements": [
            {
                "name": "GA",
                "value": 12.5,
                "unit": "evaluations/s",
                "peak_rss_mb": 100.0,
                "peak_cuda_mb": None,
                "notes": "n",
                "data": "d",
                "device": "cpu",
                "torch_threads": 1,
            },
            {"name": "ga", "value": None, "unit": None, "notes": "failed: boom"},
        ],
    }
    for demo_record, expected in ((demo, "| 600 | s |"), (missing, "| not measured | s |")):
        speed.write_markdown(tmp_path / "speed.md", result | {"demo": demo_record})
        text = (tmp_path / "speed.md").read_text()
        assert "| measurement | value | unit | peak RSS MB | peak CUDA MB | notes |" in text
        assert (
            "| GA | 12.5 | evaluations/s | 100.0 | - |" in text
            and "failed: boom" in text
            and expected in text
        )


def test_fresh_process(speed, images):
    spec = {
        "images": images,
        "profile": "tiny",
        "population": 4,
        "generations": 2,
        "workers": 1,
        "crop_px": 64,
    }
    row = speed.in_fresh_process("ga", spec, threads=1, timeout_s=120)
    check_row(row, "evaluations/s")
    assert row["process_wall_s"] > 0
    failed = speed.in_fresh_process("no_such_measurement", {}, threads=1, timeout_s=120)
    assert failed["value"] is None and "no_such_measurement" in failed["error"]
