"""The adaptation pipeline train.py runs: one module per stage (preseg, sizes, styles, stylegen, masks,
synthetic, segmenter, postprocess, bundle), the orchestration in ``runner``, the run report in ``report``."""

from nucleaizer.pipeline.runner import STAGES, active_stages, run, validate_config

__all__ = ["STAGES", "active_stages", "run", "validate_config"]
