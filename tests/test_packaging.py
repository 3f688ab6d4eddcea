"""The package list in setup.cfg is written by hand; make sure no package folder is forgotten."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lhdbench").rglob("__init__.py")}
    found.add("lhdbench.baselines")  # the top-level baselines/ folder, mapped by package_dir
    found.add("lhdbench.conditions")  # the top-level conditions/ folder, mapped by package_dir
    assert found == listed


def test_baselines_install_under_the_lhdbench_namespace():
    import lhdbench.baselines

    assert Path(lhdbench.baselines.__file__).resolve().parent == ROOT / "baselines"
