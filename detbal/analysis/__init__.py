"""Kernel estimation, detailed-balance tests and least-action potentials.

Submodules are imported on first use so that ``import detbal.analysis`` does not
pull in numba:

* :mod:`detbal.analysis.counts`: counts and the estimated kernel;
* :mod:`detbal.analysis.action`: the numba action and gradient;
* :mod:`detbal.analysis.potential`: least-action potential with bootstrap errors;
* :mod:`detbal.analysis.balance`: closed-path, global, pair and one-sided tests;
* :mod:`detbal.analysis.summary`: width, expected action, downhill fraction;
* :mod:`detbal.analysis.report`: figures and the Markdown report (matplotlib).
"""
