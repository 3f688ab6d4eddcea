"""The LHD search space: ops, supernet, ArchWeights, Genotype, discretize and the final network.

Imports nothing from the rest of lhdbench."""

from .arch_weights import ArchFileError, ArchWeights, load_arch_weights
from .discretize import discretize
from .genotype import CellGenotype, Edge, Genotype, GenotypeError
from .network import FinalNetwork, build_final_network, count_parameters, network_shape
from .ops import PRIMITIVES
from .policies import POLICIES, Policy, get_policy
from .supernet import CellWeights, Supernet
from .upstream import load_any, load_upstream_pl

__all__ = [
    "ArchFileError", "ArchWeights", "CellGenotype", "CellWeights", "Edge", "FinalNetwork",
    "Genotype", "GenotypeError", "POLICIES", "PRIMITIVES", "Policy", "Supernet",
    "build_final_network", "count_parameters", "discretize", "get_policy", "load_any",
    "load_arch_weights", "load_upstream_pl", "network_shape",
]
