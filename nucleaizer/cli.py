"""The Hydra entry points: ``nucleaizer-train`` and ``nucleaizer-infer`` (console scripts of the installed
package; ``python train.py`` and ``python infer.py`` in a checkout are the same commands).

Mistakes on the command line (a missing target, an unknown key, a value left at ``???``) and the
``UserError`` raised by library code end in one line saying what is wrong and how to fix it, not in a
traceback. Set ``HYDRA_FULL_ERROR=1`` to see the traceback anyway.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from nucleaizer.config_files import CONF_DIR
from nucleaizer.errors import UserError, fail

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def describe_hydra_error(exc: BaseException, config_name: str) -> str:
    """Turn a Hydra/OmegaConf composition error into one actionable sentence."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if "Could not find" in text and "Available options" in text:
        group_line = _first_line(exc).rstrip(".")
        options = text.split("Available options", 1)[1].split(":", 1)[-1].split("Config search path")[0]
        options = ", ".join(options.split())
        return f"{group_line}; available: {options}"
    if "Could not override" in text or "not in struct" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return (
            f"unknown config key '{key}': check the spelling against {CONF_DIR / config_name}.yaml "
            f"(nucleaizer-{config_name} --cfg job lists every key), or add a new key with +{key}=VALUE"
        )
    detail = f" ({_first_line(cause)})" if cause is not None else ""
    return f"{_first_line(exc)}{detail}"


def missing_values(cfg: DictConfig) -> list[str]:
    """Keys still set to ``???`` (mandatory values the user must give)."""
    return sorted(OmegaConf.missing_keys(cfg))


def check_config(
    config_name: str, overrides: list[str], validate: Callable[[DictConfig], None] | None = None
) -> DictConfig | None:
    """Compose the configuration the way Hydra will and fail with one line when it is unusable.

    Returns the composed config, or None when the command line holds Hydra flags or sweeps that only
    Hydra itself can interpret (those are left to Hydra's own error reporting).
    """
    if any(arg.startswith("-") for arg in overrides) or any(
        "," in arg and "=" in arg and "[" not in arg for arg in overrides
    ):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        fail(describe_hydra_error(exc, config_name))
    if validate is not None:
        try:
            validate(cfg)
        except UserError as exc:
            fail(str(exc))
    missing = missing_values(cfg)
    if missing:
        examples = " ".join(f"{key}=..." for key in missing)
        fail(f"missing value for {', '.join(missing)}: give it on the command line, e.g. {examples}")
    return cfg


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


# what a rerun of the same command keeps, per entry point (the sentence after "run the same command again:")
KEPT_ON_RERUN = {
    "train": "finished stages are kept, and the interrupted stage (its half-written files are in .partial/) "
    "starts over",
    "infer": "the images already finished are kept and skipped",
}


def describe_disk_full(exc: OSError, config_name: str = "train") -> str:
    """The one-line message for a write that failed because the disk (or quota) is full."""
    where = f" while writing {exc.filename}" if exc.filename else ""
    return (
        f"no space left on the device{where}. Free some space and run the same command again: "
        f"{KEPT_ON_RERUN[config_name]}"
    )


def hydra_entry_point(
    config_name: str,
    task: Callable[[DictConfig], object],
    validate: Callable[[DictConfig], None] | None = None,
) -> None:
    """Run ``task`` under ``hydra.main`` after a one-line-error check of the command line."""
    import hydra

    check_config(config_name, sys.argv[1:], validate)

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            task(cfg)
        except (UserError, OSError) as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or (
                isinstance(exc, OSError) and exc.errno not in DISK_FULL
            ):
                raise
            message = describe_disk_full(exc, config_name) if isinstance(exc, OSError) else str(exc)
            log.error("%s", message)
            fail(message)

    _main()


def train() -> None:
    """``nucleaizer-train +target=NAME [key=value ...]``: adapt nucleaizer to an experiment."""
    from nucleaizer import pipeline

    hydra_entry_point("train", pipeline.run, validate=pipeline.validate_config)


def infer() -> None:
    """``nucleaizer-infer input=DIR output=DIR [model=NAME|PATH|classical]``: segment a folder of images."""
    from nucleaizer.infer.job import run
    from nucleaizer.infer.settings import validate_config

    hydra_entry_point("infer", run, validate=validate_config)
