"""Where a value object mirrors a config section, its defaults and the section's values are the same numbers
and the same keys: a default changed in one place and not the other fails here."""

import inspect
from dataclasses import MISSING, asdict, fields

import pytest
from omegaconf import OmegaConf

from nucleaizer.augment import AugmentParams
from nucleaizer.baseline import ClassicalPredictor
from nucleaizer.config_files import CONF_DIR, load_config
from nucleaizer.errors import UserError
from nucleaizer.infer.settings import tile_params
from nucleaizer.infer.tiling import TileParams
from nucleaizer.maskrcnn_arch import MaskRCNNArch
from nucleaizer.postprocess.genetic import GASearch, GeneticAlgorithm
from nucleaizer.size import SizeRule


def field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def test_the_size_rule_is_the_train_size_section_and_the_classical_size_section():
    train_size = load_config("train")["size"]
    classical_size = load_config("infer")["classical_size"]
    assert set(train_size) - {"diameter_px"} == field_names(SizeRule) == set(classical_size)
    assert SizeRule.from_config(train_size, ignore=("diameter_px",)) == SizeRule()
    assert SizeRule.from_config(classical_size) == SizeRule()
    with pytest.raises(UserError, match="diameter_px"):
        SizeRule.from_config(train_size)  # the user's own estimate is not part of the rule


def test_tile_params_are_the_infer_tile_keys():
    infer = OmegaConf.load(CONF_DIR / "infer.yaml")
    assert tile_params(infer) == TileParams()


def test_the_classical_baseline_is_the_infer_classical_section():
    section = load_config("infer")["classical"]
    assert set(section) == field_names(ClassicalPredictor)
    assert ClassicalPredictor(**section) == ClassicalPredictor()


@pytest.mark.parametrize("segmenter", sorted(p.stem for p in (CONF_DIR / "segmenter").glob("*.yaml")))
def test_every_segmenter_config_augments_with_the_augment_defaults(segmenter):
    section = load_config("segmenter", segmenter)["train"]["augment"]
    assert set(section) == set(asdict(AugmentParams()))
    assert AugmentParams.from_dict(section) == AugmentParams()


def test_the_ga_section_is_the_genetic_algorithm_defaults_and_nothing_else():
    section = load_config("postprocess", "default")["ga"]
    search = GASearch.from_config(section)
    defaults = {
        name: p.default
        for name, p in inspect.signature(GeneticAlgorithm).parameters.items()
        if name in section and name != "genes"
    }
    assert search.algorithm_settings() == defaults
    assert [gene.name for gene in search.genes] == list(load_config("postprocess", "default")["params"])
    with pytest.raises(UserError, match="popsize"):
        GASearch.from_config(section | {"popsize": 3})
    with pytest.raises(UserError, match="workers"):
        GASearch.from_config({k: v for k, v in section.items() if k != "workers"})


@pytest.mark.parametrize("segmenter", sorted(p.stem for p in (CONF_DIR / "segmenter").glob("*.yaml")))
def test_every_segmenter_network_is_a_complete_arch_whose_defaults_live_in_the_config_only(segmenter):
    section = load_config("segmenter", segmenter)["arch"]
    assert set(section) == field_names(MaskRCNNArch)
    assert MaskRCNNArch.from_config(section).as_dict() == section
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(MaskRCNNArch))
    with pytest.raises(UserError, match=r"unknown keys \['crop_size'\]"):
        MaskRCNNArch.from_config(section | {"crop_size": 256})
    with pytest.raises(UserError, match=r"missing keys \['backbone'\]"):
        MaskRCNNArch.from_config({k: v for k, v in section.items() if k != "backbone"})
