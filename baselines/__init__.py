"""Search methods, one module each, installed as `lhdbench.baselines`.

(`baselines` alone is an unrelated PyPI project, so this folder never installs under that name.)
"""
