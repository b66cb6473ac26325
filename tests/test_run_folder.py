"""Stage records: a finished stage is skipped, a changed setting re-runs, an interrupted stage is never done."""

import pytest

from nucleaizer.run_folder import RunFolder, fingerprint


def test_fingerprint_chains_settings_and_upstream():
    assert fingerprint({"a": 1}) == fingerprint({"a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"a": 1}, "x") != fingerprint({"a": 1}, "y")


def test_finished_stage_is_published_with_its_record(tmp_path):
    run = RunFolder(tmp_path)
    with run.stage("styles", "f1") as (out, summary):
        (out / "clusters.csv").write_text("image,style\n")
        summary["k"] = 3
    assert run.is_done("styles", "f1")
    assert not run.is_done("styles", "f2")
    assert (run.path("styles") / "clusters.csv").exists()
    assert run.record("styles")["summary"] == {"k": 3}
    assert not (tmp_path / ".partial" / "styles").exists()


def test_interrupted_stage_is_not_done_and_keeps_its_partial_work_for_the_same_fingerprint(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(KeyboardInterrupt), run.stage("stylegen", "f1") as (out, _):
        (out / "style_0.pt").write_text("finished sub-step")
        raise KeyboardInterrupt
    assert not run.is_done("stylegen", "f1")
    assert run.record("stylegen") is None
    with run.stage("stylegen", "f1") as (out, _):
        assert (out / "style_0.pt").read_text() == "finished sub-step"
    with pytest.raises(RuntimeError), run.stage("masks", "f1") as (out, _):
        (out / "half.png").write_text("x")
        raise RuntimeError
    with run.stage("masks", "f2") as (out, _):  # another configuration: stale partial work is wiped
        assert not (out / "half.png").exists()


def test_rerun_replaces_the_old_results(tmp_path):
    run = RunFolder(tmp_path)
    with run.stage("masks", "f1") as (out, _):
        (out / "old.png").write_text("x")
    with run.stage("masks", "f2") as (out, _):
        (out / "new.png").write_text("y")
    assert run.is_done("masks", "f2")
    assert sorted(p.name for p in run.path("masks").iterdir()) == ["new.png", "stage.json"]
