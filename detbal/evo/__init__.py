"""Explicit potentials V(state) (METHOD.md section 5).

Submodules are imported on first use (numba and deap stay out of ``import detbal``):

* :mod:`detbal.evo.tokenize`: the ansatz tokenizer, ``fixed`` and ``paper`` modes;
* :mod:`detbal.evo.features`: :class:`~detbal.evo.features.FeatureMatrix` and
  :func:`~detbal.evo.features.featurize` (every state parsed once);
* :mod:`detbal.evo.family49`: the paper's 49-parameter family, as a formula, and
  the CMA-ES fit of its parameters to the action;
* :mod:`detbal.evo.transitions`: loading a run's kernel and features, and the
  paper's downhill/uphill statistic;
* :mod:`detbal.evo.registry`: the one operator registry (numpy, sympy, LaTeX, DEAP);
* :mod:`detbal.evo.gp`: DEAP genetic programming with the action as fitness;
* :mod:`detbal.evo.pysr_engine`: PySR, used only when a working Julia is found;
* :mod:`detbal.evo.engines`: the engine protocol and the four engines (gp, family49,
  operon, pysr);
* :mod:`detbal.evo.discover`: :func:`~detbal.evo.discover.discover`, the one entry,
  returning a :class:`~detbal.evo.discover.DiscoveryResult` for every engine;
* :mod:`detbal.evo.pareto`: formulas and the (complexity, action) Pareto table;
* :mod:`detbal.evo.compare`: an explicit potential beside the numeric one.
"""
