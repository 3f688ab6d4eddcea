"""Search methods: the API a method is written against (`api`), the registry the baselines and plugins
add themselves to (`registry`), and a method's settings under a protocol (`settings`).

Plugins import what they need from here: ``from lhdbench.methods import SearchMethod, register``.
"""

from .api import PAPER_SEARCH_EPOCHS, SearchContext, SearchMethod, batch_metrics, scaled_epochs
from .registry import (
    ENTRY_POINT_GROUP,
    PLUGINS_ENV,
    PluginError,
    PluginFailure,
    add_plugin_files,
    check_protocol_methods,
    discover,
    get_method,
    load_plugin_file,
    method_names,
    method_source,
    plugin_failures,
    plugin_files,
    register,
)
from .settings import resolve_settings

__all__ = ["ENTRY_POINT_GROUP", "PAPER_SEARCH_EPOCHS", "PLUGINS_ENV", "PluginError", "PluginFailure",
           "SearchContext", "SearchMethod", "add_plugin_files", "batch_metrics", "check_protocol_methods",
           "discover", "get_method", "load_plugin_file", "method_names", "method_source",
           "plugin_failures", "plugin_files", "register", "resolve_settings", "scaled_epochs"]
