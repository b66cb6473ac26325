"""The stage loop: finished stages are skipped, a changed setting re-runs its stage and those after it,
stages= runs a subset, force=true redoes, and a failing stage is never recorded as done."""

import pytest

from nucleaizer import pipeline
from nucleaizer.errors import UserError
from tests.helpers.configs import compose_demo_train


def make_cfg(tmp_path, *overrides):
    return compose_demo_train(tmp_path, "target.demo.n_target=2", "target.demo.image_size=64", *overrides)


class Recorder:
    """Stage functions that write a file and remember which stages ran."""

    def __init__(self, fail_at=None):
        self.ran = []
        self.fail_at = fail_at

    def functions(self):
        def make(stage):
            def run_stage(ctx, out, summary):
                self.ran.append(stage)
                (out / "result.txt").write_text(stage)
                if stage == self.fail_at:
                    raise RuntimeError("disk full")
                summary["ok"] = 1

            return run_stage

        return {stage: make(stage) for stage in pipeline.STAGES}


def test_second_run_skips_every_finished_stage(tmp_path):
    first, second = Recorder(), Recorder()
    pipeline.run(make_cfg(tmp_path), first.functions())
    assert first.ran == pipeline.active_stages(make_cfg(tmp_path))
    report = pipeline.run(make_cfg(tmp_path), second.functions())
    assert second.ran == []
    assert set(report["stages"]) == set(first.ran)
    assert (tmp_path / "run" / "report.md").exists()


def test_changed_setting_reruns_its_stage_and_the_later_ones(tmp_path):
    pipeline.run(make_cfg(tmp_path), Recorder().functions())
    again = Recorder()
    pipeline.run(make_cfg(tmp_path, "masks.n_per_style=3"), again.functions())
    assert again.ran == ["masks", "synthetic", "segmenter", "postprocess", "bundle"]


def test_failed_stage_is_not_done_and_the_next_run_resumes_there(tmp_path):
    failing = Recorder(fail_at="stylegen")
    with pytest.raises(RuntimeError):
        pipeline.run(make_cfg(tmp_path), failing.functions())
    assert not (tmp_path / "run" / "stylegen").exists()
    resumed = Recorder()
    pipeline.run(make_cfg(tmp_path), resumed.functions())
    assert resumed.ran[0] == "stylegen"


def test_subset_needs_finished_earlier_stages_and_force_redoes(tmp_path):
    with pytest.raises(UserError, match="stage 'preseg' has not run"):
        pipeline.run(make_cfg(tmp_path, "stages=[styles]"), Recorder().functions())
    pipeline.run(make_cfg(tmp_path), Recorder().functions())
    forced = Recorder()
    pipeline.run(make_cfg(tmp_path, "stages=[styles]", "force=true"), forced.functions())
    assert forced.ran == ["styles"]


def test_subset_stops_after_its_last_stage(tmp_path):
    first = Recorder()
    report = pipeline.run(make_cfg(tmp_path, "stages=[preseg]"), first.functions())
    assert first.ran == ["preseg"] and list(report["stages"]) == ["preseg"]
    then = Recorder()
    pipeline.run(make_cfg(tmp_path, "stages=[sizes,styles]"), then.functions())
    assert then.ran == ["sizes", "styles"]


def test_nostyle_skips_the_style_stages(tmp_path):
    recorder = Recorder()
    pipeline.run(make_cfg(tmp_path, "style=none"), recorder.functions())
    assert recorder.ran == ["preseg", "sizes", "segmenter", "postprocess", "bundle"]
