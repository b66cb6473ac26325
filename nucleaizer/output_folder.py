"""Where results may be written: never into an input, never over files that nucleaizer did not write.

The rules, checked before anything is written (and before Hydra creates its log folder under the output):

1. The output folder is not an input folder, does not lie inside one and does not contain one (images,
   labels, ground truth, model, dataset folders, weight files).
2. It is a folder, or does not exist yet, and it can be written.
3. When it exists and is not empty it holds the marker file ``.nucleaizer-output``, which nucleaizer writes
   into every folder it puts results in (a train.py run folder with finished stages counts too). A non-empty
   folder without it holds someone else's files and is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from nucleaizer.errors import UserError

MARKER = ".nucleaizer-output"


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved, links followed)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_separate(
    output: str | Path, inputs: Mapping[str, str | Path | None], own_inputs: str | Path | None = None
) -> None:
    """Rule 1: UserError when ``output`` is, lies inside, or contains one of ``inputs`` (key -> path).

    own_inputs: a folder below ``output`` holding inputs that nucleaizer generated there itself (the demo's
    simulated data); inputs inside it may lie inside the output.
    """
    output = Path(output)
    for key, path in inputs.items():
        if path is None or str(path) == "":
            continue
        path = Path(path)
        if _inside(output, path):
            where = "is" if output.resolve() == path.resolve() else "lies inside"
            raise UserError(
                f"the output folder {output} {where} the {key} {path}: choose an output folder "
                "outside every input (inputs are never written to)"
            )
        if _inside(path, output) and not (own_inputs is not None and _inside(path, Path(own_inputs))):
            raise UserError(
                f"the output folder {output} contains the {key} {path}: choose an output folder "
                "that holds no input (inputs are never written to)"
            )


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(output: str | Path) -> None:
    """Rule 2: UserError when ``output`` is an existing file, or when it (or where it would be made) is not
    writable. Nothing is left behind: the check creates and removes a temporary folder."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"the output {output} is an existing file, not a folder: choose a folder path")
    existing = _nearest_existing(output)
    if not existing.is_dir():
        raise UserError(f"the output folder {output} cannot be made: {existing} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nucleaizer-probe-", dir=existing))
    except OSError as error:
        raise UserError(
            f"the output folder {output} cannot be written ({existing}: {error.strerror}); "
            "choose a folder you can write to"
        ) from None


def is_ours(folder: str | Path) -> bool:
    """Whether a folder holds results of nucleaizer (its marker, or finished train.py stages)."""
    folder = Path(folder)
    return (folder / MARKER).is_file() or any(folder.glob("*/stage.json"))


def check_ours_or_empty(output: str | Path, ignore: tuple[str, ...] = ()) -> None:
    """Rule 3: UserError when ``output`` exists, holds entries other than ``ignore`` (names the entry point
    itself creates before its checks run, such as Hydra's log folder) and is not a nucleaizer output folder."""
    output = Path(output)
    if output.is_dir() and any(p.name not in ignore for p in output.iterdir()) and not is_ours(output):
        raise UserError(
            f"the output folder {output} already holds files that nucleaizer did not write: choose "
            "a new or empty folder (existing files are never overwritten)"
        )


def check_output(
    output: str | Path,
    inputs: Mapping[str, str | Path | None],
    own_inputs: str | Path | None = None,
    ignore: tuple[str, ...] = (),
) -> None:
    """All three rules (see the module doc and check_ours_or_empty); call it before anything is written."""
    check_separate(output, inputs, own_inputs)
    check_writable(output)
    check_ours_or_empty(output, ignore)


def claim(output: str | Path, tool: str) -> Path:
    """Create ``output`` (when needed) and mark it as nucleaizer's; returns it. Call after ``check_output``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    marker = output / MARKER
    if not marker.is_file():
        marker.write_text(
            json.dumps({"written_by": f"nucleaizer {tool}", "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
            + "\n"
        )
    return output
