"""The registry of search methods and how plugins get into it.

Three sources, imported once on the first lookup (`discover`):

* every module of `lhdbench.baselines` (the `baselines/` folder);
* every entry point of the group `lhdbench.baselines` (installed plugin packages). One that fails to
  import is remembered (`plugin_failures`) and reported, and the other methods still load;
* every file named in $LHDBENCH_PLUGINS (what `--plugin FILE` sets; the runner passes it on to its Ray
  workers). The user asked for these by name, so one that fails to import, registers a name that
  exists already or registers nothing is an error (PluginError) on every lookup.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..names import did_you_mean
from ..protocol import Protocol
from ..rules import ProtocolError
from .api import SearchMethod
from .settings import check_defaults, resolve_settings

ENTRY_POINT_GROUP = "lhdbench.baselines"
PLUGINS_ENV = "LHDBENCH_PLUGINS"
_REGISTRY: dict[str, type[SearchMethod]] = {}
_SOURCES: dict[str, str] = {}
_FAILURES: dict[str, str] = {}
_FILE_ERRORS: list[str] = []
_discovered = False


class PluginError(ValueError):
    """A plugin file the user named cannot be used; the message is one line."""


@dataclass(frozen=True)
class PluginFailure:
    """A baseline module or entry point that could not be loaded."""

    name: str
    error: str


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _error_text(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def register(cls: type[SearchMethod]) -> type[SearchMethod]:
    """Class decorator: add a method under its `name`; a second definition of a name is an error."""
    if not (isinstance(cls, type) and issubclass(cls, SearchMethod)):
        raise TypeError(f"{cls!r} is not a SearchMethod subclass")
    if not cls.name or cls.name != cls.name.strip() or " " in cls.name:
        raise ValueError(f"{_where(cls)} needs a `name` without spaces")
    if not cls.description or "\n" in cls.description:
        raise ValueError(f"{_where(cls)} needs a one-line `description`")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and _where(existing) != _where(cls):
        raise ValueError(f"search method {cls.name!r} is defined twice: {_where(existing)} and {_where(cls)}")
    check_defaults(cls)
    _REGISTRY[cls.name] = cls
    _SOURCES.setdefault(cls.name, cls.__module__)
    return cls


def discover() -> None:
    """Import the baselines, the entry points and the plugin files, once (see the module docstring).
    Raises PluginError while a plugin file named in $LHDBENCH_PLUGINS could not be used."""
    global _discovered
    if not _discovered:
        _discovered = True
        _load_baselines()
        _load_entry_points()
        for path in plugin_files():
            try:
                load_plugin_file(path)
            except PluginError as error:
                _FILE_ERRORS.append(str(error))
    if _FILE_ERRORS:
        raise PluginError(_FILE_ERRORS[0])


def _load_baselines() -> None:
    import lhdbench.baselines as package

    for module in pkgutil.iter_modules(package.__path__):
        qualified = f"{package.__name__}.{module.name}"
        try:
            importlib.import_module(qualified)
        except Exception as error:  # a broken module must not hide the others
            _FAILURES[qualified] = _error_text(error)


def _load_entry_points() -> None:
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        label = f"entry point {entry.name} = {entry.value}"
        try:
            loaded = entry.load()
            if isinstance(loaded, type) and issubclass(loaded, SearchMethod):
                register(loaded)
                classes = [loaded]
            else:
                classes = [c for c in _REGISTRY.values() if c.__module__ == getattr(loaded, "__name__", "")]
            dist = entry.dist.name if entry.dist is not None else "unknown distribution"
            for cls in classes:
                _SOURCES[cls.name] = f"{cls.__module__} (plugin package {dist})"
        except Exception as error:
            _FAILURES[label] = _error_text(error)


def load_plugin_file(path: Path) -> list[str]:
    """Import one single-file plugin; returns the names it registered. PluginError when the file is
    missing, fails to import (a name defined twice included) or registers no method."""
    if not path.is_file():
        raise PluginError(f"plugin file {path} does not exist")
    module_name = f"lhdbench_plugin_{path.stem}"
    before = set(_REGISTRY)
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError("not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise PluginError(f"plugin file {path} failed to load: {_error_text(error)}") from None
    added = sorted(set(_REGISTRY) - before)
    if not added:
        raise PluginError(f"plugin file {path} registers no search method "
                          "(decorate a SearchMethod subclass with @register)")
    for name in added:
        _SOURCES[name] = f"{path} (plugin file)"
    return added


def plugin_files() -> list[Path]:
    """Single-file plugins named in $LHDBENCH_PLUGINS (paths separated by os.pathsep)."""
    raw = os.environ.get(PLUGINS_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def add_plugin_files(paths: list[str]) -> None:
    """Name single-file plugins for this process and the trials it starts (absolute paths: trials run
    in other working directories and on other machines). Checked before anything runs."""
    if not paths:
        return
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise PluginError(f"plugin file {missing[0]} does not exist")
    existing = [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p]
    new = [str(Path(p).resolve()) for p in paths]
    new = [p for i, p in enumerate(new) if p not in existing and p not in new[:i]]
    os.environ[PLUGINS_ENV] = os.pathsep.join(existing + new)
    if _discovered:  # a lookup happened already: load the new files now
        for path in new:
            load_plugin_file(Path(path))


def plugin_failures() -> list[PluginFailure]:
    discover()
    return [PluginFailure(name, error) for name, error in sorted(_FAILURES.items())]


def method_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def method_source(name: str) -> str:
    """Where a registered method was defined: its module, and its package for an installed plugin."""
    discover()
    return _SOURCES[name]


def get_method(name: str) -> type[SearchMethod]:
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        failed = f" (plugins that failed to load: {', '.join(sorted(_FAILURES))})" if _FAILURES else ""
        raise ValueError(f"unknown baseline {name!r}; known baselines: {known}{failed}"
                         f"{did_you_mean(name, _REGISTRY)}") from None


def check_protocol_methods(protocol: Protocol) -> None:
    """Every method a protocol's `methods:` section names exists, and its overrides resolve."""
    names = method_names()
    for name in protocol.methods:
        if name not in names:
            raise ProtocolError(f"methods.{name}: unknown search method (known: {', '.join(names)})"
                                f"{did_you_mean(name, names)}")
        resolve_settings(get_method(name), protocol)
