"""Errors that several parts raise. Standard library only and importing nothing from lhdbench (as
files.py), so that the command line, the report and `space/` can share them without import cycles."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""
