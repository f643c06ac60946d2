"""detbal: detailed balance and least-action potentials for LLM-driven agents.

Data flows one way: agents -> store -> analysis -> evo -> report.  Importing the
package is cheap; numba, matplotlib and the language-model clients are imported
only where they are used.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
