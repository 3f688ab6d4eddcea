"""lhdbench: a benchmark harness for differentiable NAS on the LHD search space."""

__version__ = "0.1.0"
