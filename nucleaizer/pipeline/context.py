"""What a stage is and what it gets: the ``Stage`` record each stage module declares, and the ``Context``.

A stage's run function has the signature ``(ctx, out, summary)``: it writes its results into ``out`` (a
partial folder that becomes ``<run_dir>/<stage>`` when it returns) and fills ``summary`` with its headline
figures. Its module also owns the readers of those results (e.g. ``sizes.read_scales(run)``), so the next
stage never spells a file name of another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from nucleaizer.run_folder import RunFolder
from nucleaizer.tracking import Tracker


@dataclass
class Context:
    """What every stage gets: the configuration, the run folder and the tracker."""

    cfg: DictConfig
    run: RunFolder
    tracker: Tracker


StageFunction = Callable[[Context, Path, dict], None]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: its folder name, what it does (docs/method.md sections in brackets), the
    configuration keys it depends on (beside everything upstream of it: a change re-runs it) and its function."""

    name: str
    does: str
    settings: tuple[str, ...]
    run: StageFunction
    uses_styles: bool = False  # runs only when a variant learns styles (style or compare is not none)
