"""Declarative settings shipped with lhdbench, installed as `lhdbench.conditions`.

This package holds data only (read with importlib.resources): protocol presets in `protocols/*.yaml`
(loaded by `lhdbench.protocol.load_protocol`) and, later, dataset and suite files.
"""
