"""Explicit potentials V(state) (METHOD.md section 5).

Submodules are imported on first use (numba and deap stay out of ``import detbal``):

* :mod:`detbal.evo.tokenize`: the ansatz tokenizer, ``fixed`` and ``paper`` modes;
* :mod:`detbal.evo.features`: :class:`~detbal.evo.features.FeatureMatrix` and
  :func:`~detbal.evo.features.featurize` (every state parsed once);
* :mod:`detbal.evo.family49`: the paper's 49-parameter family, its reference
  implementation and the CMA-ES fit of its parameters to the action;
* :mod:`detbal.evo.transitions`: loading a run's kernel and features, and the
  paper's downhill/uphill statistic.
"""
