"""The model bundle: one folder holding everything ``infer.py`` needs (see docs/pipeline.md).

::

    model/
      bundle.json     {"segmenter": "segmenter.pt", "preseg": "preseg.pt" | null, "target_diameter_px": 40,
                       "size_estimation": "model" | "classical",
                       "size": {"min_scale": .., "max_scale": .., "min_object_area_px": ..},
                       "postprocess": {...} | null, "files": [...],
                       "sha256": {"segmenter.pt": "...", ...}}
      segmenter.pt    written by nucleaizer.segmenter.save_segmenter
      preseg.pt       optional pre-segmentation model for size estimation
      ...             files the post-processing section names (U-Net weights), relative to the folder

Paths inside ``bundle.json`` are relative to the folder, so a bundle can be moved or copied whole. ``sha256``
holds the checksum of every file the bundle names; reading the bundle checks them, so a damaged or swapped
weight file fails loudly instead of segmenting badly (bundles written before the checksums have no section and
are read without the check).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from nucleaizer.errors import UserError
from nucleaizer.io import atomic_write
from nucleaizer.size import SizeRule

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "nucleaizer-bundle"
SEGMENTER_FILE = "segmenter.pt"
PRESEG_FILE = "preseg.pt"
SIZE_ESTIMATIONS = ("model", "classical")
# keys of a size section that only matter to training (the user's own estimate for the target images)
_TRAINING_ONLY_SIZE_KEYS = {"diameter_px"}


@dataclass(frozen=True)
class Bundle:
    """A model bundle read from ``folder``: absolute paths of its weights, its size rule, its post-processing."""

    folder: Path
    segmenter: Path
    preseg: Path | None
    size: SizeRule
    postprocess: dict[str, Any] | None
    files: tuple[Path, ...] = ()
    size_estimation: str = "model"  # model: the preseg (else the segmenter); classical: Otsu + watershed

    def path(self, name: str) -> Path:
        """A file of the bundle named relative to its folder (as the post-processing section names them)."""
        return self.folder / name


def _number(value: Any, key: str, source: Path) -> float:
    """A finite number from bundle.json, else a UserError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{source}: '{key}' must be a number, got {value!r}")
    return value


def _size_rule(section: dict[str, Any], target_diameter_px: Any, source: Path) -> SizeRule:
    known = {f.name for f in fields(SizeRule)}
    unknown = sorted(set(section) - known - _TRAINING_ONLY_SIZE_KEYS)
    if unknown:
        raise UserError(f"{source}: unknown key(s) {unknown} in 'size'; known keys are {sorted(known)}")
    values = {k: _number(v, f"size.{k}", source) for k, v in section.items() if k in known}
    target_diameter_px = _number(target_diameter_px, "target_diameter_px", source)
    if "target_diameter_px" in values and float(values["target_diameter_px"]) != float(target_diameter_px):
        raise UserError(f"{source}: 'target_diameter_px' differs between the top level and 'size'")
    values["target_diameter_px"] = target_diameter_px
    rule = SizeRule(**values)
    if not 0 < rule.min_scale <= rule.max_scale or rule.target_diameter_px <= 0:
        raise UserError(
            f"{source}: need target_diameter_px > 0 and 0 < min_scale <= max_scale in 'size', got {rule}"
        )
    return rule


def _existing_file(folder: Path, name: Any, key: str, source: Path) -> Path:
    if not isinstance(name, str) or not name:
        raise UserError(f"{source}: '{key}' must name a file in the bundle folder, got {name!r}")
    path = folder / name
    if not path.is_file():
        raise UserError(
            f"incomplete model bundle {folder}: '{key}' names {name}, which is missing; "
            "copy the whole bundle folder or rebuild it with train.py"
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_checksums(folder: Path, checksums: Any, named: list[Path], source: Path) -> None:
    """Every file the bundle names has the sha256 that bundle.json records for it."""
    if not isinstance(checksums, dict):
        raise UserError(f"{source}: 'sha256' must map file names to checksums")
    unlisted = sorted(p.name for p in named if p.name not in checksums)
    if unlisted:
        raise UserError(f"{source}: no sha256 recorded for {unlisted}")
    for name, expected in checksums.items():
        path = folder / name
        if not path.is_file():
            raise UserError(f"incomplete model bundle {folder}: {name} (listed in 'sha256') is missing")
        if file_sha256(path) != expected:
            raise UserError(
                f"{path} does not match the checksum in {source}: the file is damaged or was replaced; "
                "copy the bundle again (or reinstall nucleaizer for a shipped model)"
            )


def read_bundle(folder: str | Path) -> Bundle:
    """Read and check a bundle folder; ``UserError`` naming the path for a missing or incomplete bundle."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(
            f"model bundle {folder} does not exist: give model=PATH, the model/ folder of a "
            "train.py run (runs/<target>/model)"
        )
    if not folder.is_dir():
        raise UserError(f"model={folder} is a file; give the bundle folder holding {BUNDLE_FILE}")
    source = folder / BUNDLE_FILE
    if not source.is_file():
        raise UserError(
            f"{folder} is not a model bundle: {BUNDLE_FILE} is missing (train.py writes it "
            "in the model/ folder of a run)"
        )
    try:
        content = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{source} is not readable JSON ({error})") from error
    if not isinstance(content, dict):
        raise UserError(f"{source} must hold a JSON object")
    missing = sorted({"segmenter", "target_diameter_px"} - set(content))
    if missing:
        raise UserError(f"incomplete model bundle {source}: missing key(s) {missing}")
    postprocess = content.get("postprocess")
    if postprocess is not None and not isinstance(postprocess, dict):
        raise UserError(f"{source}: 'postprocess' must be an object or null")
    if postprocess is not None and "ensemble" in postprocess:
        _existing_file(folder, postprocess["ensemble"], "postprocess.ensemble", source)
    preseg = content.get("preseg")
    size_estimation = content.get("size_estimation", "model")
    if size_estimation not in SIZE_ESTIMATIONS:
        raise UserError(
            f"{source}: 'size_estimation' must be one of {list(SIZE_ESTIMATIONS)}, not {size_estimation!r}"
        )
    bundle = Bundle(
        folder=folder,
        segmenter=_existing_file(folder, content["segmenter"], "segmenter", source),
        preseg=None if preseg is None else _existing_file(folder, preseg, "preseg", source),
        size=_size_rule(dict(content.get("size") or {}), content["target_diameter_px"], source),
        postprocess=postprocess,
        files=tuple(_existing_file(folder, name, "files", source) for name in content.get("files", [])),
        size_estimation=size_estimation,
    )
    if "sha256" in content:
        named = [bundle.segmenter, *([bundle.preseg] if bundle.preseg else []), *bundle.files]
        _check_checksums(folder, content["sha256"], named, source)
    return bundle


def _copy_into(folder: Path, source: str | Path, name: str) -> str:
    source = Path(source)
    if not source.is_file():
        raise UserError(f"cannot build the model bundle: {source} does not exist")
    target = folder / name
    if source.resolve() != target.resolve():
        with atomic_write(target) as temporary:
            shutil.copyfile(source, temporary)
    return name


def write_bundle(
    folder: str | Path,
    segmenter: str | Path,
    preseg: str | Path | None = None,
    size: SizeRule | None = None,
    postprocess: dict[str, Any] | None = None,
    files: dict[str, str | Path] | None = None,
    size_estimation: str = "model",
) -> Path:
    """Write a bundle folder; returns the path of its ``bundle.json`` (written last, atomically).

    segmenter, preseg: ``.pt`` files written by ``save_segmenter``, copied in as segmenter.pt / preseg.pt.
    size: the size rule the segmenter was trained with. postprocess: the tuned post-processing section (a JSON
    object) or None. files: extra files to copy in, as {name in the bundle: source path}; the postprocess
    section refers to them by those names. size_estimation: how infer.py measures the nucleus size of a new
    image: "model" (the preseg, else the segmenter) or "classical" (Otsu + watershed, as preseg.method=classical
    pre-segmented the target when training).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = size or SizeRule()
    size_section = {k: v for k, v in asdict(size).items() if k != "target_diameter_px"}
    content = {
        "format": BUNDLE_FORMAT,
        "version": 1,
        "segmenter": _copy_into(folder, segmenter, SEGMENTER_FILE),
        "preseg": None if preseg is None else _copy_into(folder, preseg, PRESEG_FILE),
        "target_diameter_px": size.target_diameter_px,
        "size_estimation": size_estimation,
        "size": size_section,
        "postprocess": postprocess,
        "files": [_copy_into(folder, path, name) for name, path in (files or {}).items()],
    }
    ensemble = (postprocess or {}).get("ensemble")
    if ensemble is not None and not (folder / ensemble).is_file():
        raise UserError(
            f"cannot build the model bundle: the postprocess section names {ensemble}, which is "
            f"neither in {folder} nor among the files to copy in (files={{'{ensemble}': PATH}})"
        )
    named = [content["segmenter"], content["preseg"], *content["files"]]
    content["sha256"] = {name: file_sha256(folder / name) for name in named if name is not None}
    with atomic_write(folder / BUNDLE_FILE) as temporary:
        temporary.write_text(json.dumps(content, indent=2) + "\n")
    return folder / BUNDLE_FILE


def load_predictors(bundle: Bundle, device: str = "cpu", batch_size: int = 4, mask_threshold: float = 0.5):
    """(segmenter predictor, size-estimation predictor or None) of a bundle on ``device``.

    The segmenter (and a preseg model) load as ``MaskRCNNPredictor``; a bundle whose size estimation is
    classical gets a ``ClassicalPredictor`` for it.
    """
    from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor  # the network alone: no Lightning import

    def predictor(path: Path):
        return MaskRCNNPredictor.from_file(
            path, device=device, batch_size=batch_size, mask_threshold=mask_threshold
        )

    if bundle.size_estimation == "classical":
        from nucleaizer.baseline import ClassicalPredictor

        return predictor(bundle.segmenter), ClassicalPredictor()
    return predictor(bundle.segmenter), None if bundle.preseg is None else predictor(bundle.preseg)
