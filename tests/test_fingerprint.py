"""A method's code fingerprint: what changes it (code the method runs) and what does not (layout,
unrelated code), so an edited method reruns and a tidied file does not."""

import importlib.util
import sys
import textwrap

import pytest

from lhdbench.methods import get_method, method_names
from lhdbench.methods.fingerprint import method_code

MODULE = "lhdbench_plugin_fingerprint_probe"  # as a plugin file loads: the same name after every edit

SOURCE = '''
"""A probe plugin."""

import torch

from lhdbench.methods import SearchMethod

RATE = 0.5


def _scale(x):
    return x * RATE


def _unused(x):
    return x + 1


class Base(SearchMethod):
    name = "probe-base"
    description = "a base"

    def arch_loss(self, ctx, x, y):
        return _scale(ctx.loss(x, y)[0])


class Child(Base):
    name = "probe-child"
    description = "builds on Base"
    defaults = {"arch_lr": 9e-4}


class Other(SearchMethod):
    name = "probe-other"
    description = "unrelated"

    def arch_loss(self, ctx, x, y):
        return torch.zeros(())
'''


@pytest.fixture(autouse=True)
def _forget_probe():
    yield
    sys.modules.pop(MODULE, None)


def load(tmp_path, source: str):
    """Import `source` as a fresh module under the plugin's module name, as `--plugin` does after
    an edit: the same name, a new module object."""
    path = tmp_path / "probe.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    return module


def prints(tmp_path, source: str) -> dict[str, str]:
    module = load(tmp_path, source)
    return {name: method_code(getattr(module, name)).fingerprint for name in ("Base", "Child", "Other")}


@pytest.fixture
def original(tmp_path):
    return prints(tmp_path, SOURCE)


def test_layout_comments_and_docstrings_do_not_change_a_fingerprint(tmp_path, original):
    tidied = (SOURCE.replace("RATE = 0.5", "RATE = 0.5  # the scale")
              .replace("return x * RATE", "return x*RATE")
              .replace('class Base(SearchMethod):\n', 'class Base(SearchMethod):\n    """A docstring."""\n\n')
              .replace('class Child(Base):', '# a comment\n\n\nclass Child(  Base  ):'))
    assert tidied != SOURCE
    assert prints(tmp_path, tidied) == original


@pytest.mark.parametrize("edit, changed", [
    (("return x * RATE", "return x * RATE * 2"), {"Base", "Child"}),  # a helper the methods use
    (("RATE = 0.5", "RATE = 0.25"), {"Base", "Child"}),  # a constant the helper uses
    (("return _scale(ctx.loss(x, y)[0])", "return ctx.loss(x, y)[0]"), {"Base", "Child"}),  # the base class
    (('defaults = {"arch_lr": 9e-4}', 'defaults = {"arch_lr": 1e-3}'), {"Child"}),
    (("return torch.zeros(())", "return torch.ones(())"), {"Other"}),
    (("return x + 1", "return x + 2"), set()),  # code no method uses
])
def test_an_edit_changes_exactly_the_methods_whose_code_it_touches(tmp_path, original, edit, changed):
    old, new = edit
    assert old in SOURCE
    edited = prints(tmp_path, SOURCE.replace(old, new))
    assert {name for name in original if edited[name] != original[name]} == changed


def test_every_method_covers_searchmethod_and_its_own_class():
    fingerprints = set()
    for name in method_names():
        cls = get_method(name)
        code = method_code(cls)
        assert f"{cls.__module__}:{cls.__qualname__}" in code.parts
        assert "lhdbench.methods.api:SearchMethod" in code.parts
        fingerprints.add(code.fingerprint)
    assert len(fingerprints) == len(method_names())


def test_a_helper_in_the_method_module_is_covered_and_a_sibling_method_is_not():
    parts = method_code(get_method("pcd-darts")).parts
    assert "lhdbench.baselines.small_temperature:pcd_temperature" in parts
    assert not any(p.endswith(":EddDarts") for p in parts)
    # gaea-erm's exponentiated-gradient step lives beside it, outside the class.
    assert "lhdbench.baselines.gaea:exponentiated_gradient_" in method_code(get_method("gaea-erm")).parts


def test_a_class_defined_inside_a_function_has_a_fingerprint_that_follows_its_code():
    from lhdbench.methods import SearchMethod

    def make(scale):
        if scale:
            class Local(SearchMethod):
                def arch_loss(self, ctx, x, y):
                    return 2 * ctx.loss(x, y)[0]
        else:
            class Local(SearchMethod):
                def arch_loss(self, ctx, x, y):
                    return ctx.loss(x, y)[0]
        return Local

    assert method_code(make(True)).fingerprint != method_code(make(False)).fingerprint
