"""DARTS, first order (Liu et al., ICLR 2019), as the LHD code runs it (chaoji90/LHD
`search/DARTS/train_search_darts.py`): the default behaviour of every SearchMethod hook."""

from lhdbench.methods import SearchMethod, register


@register
class Darts(SearchMethod):
    name = "darts"
    description = "first-order bilevel DARTS: Adam on architecture, SGD on weights, alternating"
    paper = "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019"
