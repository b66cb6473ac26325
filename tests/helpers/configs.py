"""train.py configurations composed the way the command line composes them, for tests of the demo target."""

from hydra import compose, initialize_config_dir

from nucleaizer.config_files import CONF_DIR


def compose_demo_train(tmp_path, *overrides):
    """``train.py +target=demo`` with a small source, no logger and its run folder under ``tmp_path``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "+target=demo",
                "logger=none",
                f"run_dir={tmp_path / 'run'}",
                "target.demo.n_source=2",
                *overrides,
            ],
        )
