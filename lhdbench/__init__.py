"""lhdbench: a benchmark harness for differentiable NAS on the LHD search space."""

__version__ = "0.2.0"
