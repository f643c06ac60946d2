"""Numba kernel of the 49-parameter family (imported on first use by family49).

One pass over the states; the operations and their order are those of the numpy
path in :func:`detbal.evo.family49.family_potential` (and of its plain reference),
so the three agree to rounding.  ``M`` has the columns ``NB_COLUMNS`` and ``p``
the parameters in ``PARAM_NAMES`` order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NB_COLUMNS: tuple[str, ...] = (
    "empty", "bad_paren", "extra_chars", "log1p_length", "max_depth", "n_funcs", "div_pow",
    "n_abs", "n_trig", "nested_expr", "div_risk", "pow_risk", "sqrt_risk", "n_params",
    "freq_var", "entropy_norm", "has_log_v", "n_log", "pattern_count", "linear_logv",
    "centered_linear", "nonlinear", "n_exp", "simple_ok", "length",
)
(C_EMPTY, C_BAD, C_EXTRA, C_LOG1P_LEN, C_DEPTH, C_FUNCS, C_DIVPOW, C_ABS, C_TRIG, C_NESTED,
 C_DIVRISK, C_POWRISK, C_SQRTRISK, C_NPAR, C_FREQVAR, C_ENT, C_HASV, C_NLOG, C_PATTERNS,
 C_LIN, C_CEN, C_NONLIN, C_NEXP, C_SIMPLE, C_LEN) = range(len(NB_COLUMNS))

# parameter indices in PARAM_NAMES order (tests compare this engine with numpy and the reference)
(P_EMPTY, P_PAREN, P_EXTRA_PEN, P_EXTRA_THR, P_LEN_DIV, P_DEPTH_PEN, P_DEPTH_THR, P_FUNC,
 P_DIVPOW, P_ABS, P_TRIG, P_NESTED, P_DIVRISK, P_POWRISK, P_SQRTRISK, P_NOPAR, P_FEW_PEN,
 P_FEW_THR, P_OPT_MIN, P_OPT_MAX, P_OPT_BONUS, P_EXC_PEN, P_EXC_THR, P_FV_W, P_FV_CAP,
 P_ENT, P_LOGV, P_LOG, P_PA_BONUS, P_PC_DIV, P_LIN_W, P_CEN_W, P_NONLIN_W, P_EXP_W,
 P_PROX_CAP, P_PROX_BONUS, P_SIMPLE_BONUS, P_SIMPLE_LEN, P_SIMPLE_FUNCS, P_SHORT_BONUS,
 P_SHORT_LEN, P_MAX_E, P_K, P_PA_THR, P_PA_ADJ, P_MIN_V, P_MAX_V, P_NAN, P_FACTOR) = range(49)


@njit(cache=True, nogil=True)
def family_loop(M, p, out):  # pragma: no cover - compiled
    for i in range(M.shape[0]):
        if M[i, C_EMPTY] > 0:
            out[i] = p[P_EMPTY]
            continue
        E = p[P_PAREN] * M[i, C_BAD]
        E = E + max(0.0, M[i, C_EXTRA] - p[P_EXTRA_THR]) * p[P_EXTRA_PEN]
        E = E + M[i, C_LOG1P_LEN] / p[P_LEN_DIV]
        E = E + max(0.0, M[i, C_DEPTH] - p[P_DEPTH_THR]) * p[P_DEPTH_PEN]
        E = E + M[i, C_FUNCS] * p[P_FUNC]
        E = E + M[i, C_DIVPOW] * p[P_DIVPOW]
        E = E + M[i, C_ABS] * p[P_ABS]
        E = E + M[i, C_TRIG] * p[P_TRIG]
        E = E + M[i, C_NESTED] * p[P_NESTED]
        E = E + M[i, C_DIVRISK] * p[P_DIVRISK]
        E = E + M[i, C_POWRISK] * p[P_POWRISK]
        E = E + M[i, C_SQRTRISK] * p[P_SQRTRISK]
        n = M[i, C_NPAR]
        if n == 0.0:
            t = p[P_NOPAR]
        elif n < p[P_FEW_THR]:
            t = p[P_FEW_PEN] * (p[P_FEW_THR] - n)
        elif p[P_OPT_MIN] <= n and n <= p[P_OPT_MAX]:
            t = -p[P_OPT_BONUS]
        else:
            t = p[P_EXC_PEN] * max(0.0, n - p[P_EXC_THR])
        E = E + t
        E = E + p[P_FV_W] * min(M[i, C_FREQVAR], p[P_FV_CAP])
        E = E - p[P_ENT] * M[i, C_ENT]
        has_v = M[i, C_HASV] > 0
        if has_v:
            E = E - p[P_LOGV]
        elif M[i, C_NLOG] > 0:
            E = E - p[P_LOG]
        affinity = M[i, C_PATTERNS] / p[P_PC_DIV]
        E = E - p[P_PA_BONUS] * affinity
        if has_v and n > 0:
            prox = (p[P_LIN_W] * M[i, C_LIN] + p[P_CEN_W] * M[i, C_CEN]
                    + p[P_NONLIN_W] * M[i, C_NONLIN] + p[P_EXP_W] * M[i, C_NEXP])
            E = E - p[P_PROX_BONUS] * min(p[P_PROX_CAP], prox)
        length = M[i, C_LEN]
        if M[i, C_SIMPLE] > 0 and M[i, C_FUNCS] <= p[P_SIMPLE_FUNCS] and length < p[P_SIMPLE_LEN]:
            E = E - p[P_SIMPLE_BONUS]
        elif length < p[P_SHORT_LEN]:
            E = E - p[P_SHORT_BONUS]
        E = min(max(E, 0.0), p[P_MAX_E])
        z = min(-E / p[P_K], 700.0)
        val = -1.0 + 2.0 * (1.0 - math.exp(z))
        if affinity >= p[P_PA_THR] and (M[i, C_NONLIN] > 0 or has_v):
            val = val - p[P_PA_ADJ]
        if not math.isfinite(val):
            val = p[P_NAN]
        val = max(p[P_MIN_V], min(p[P_MAX_V], val))
        out[i] = val * p[P_FACTOR]


def family_values(M: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.empty(M.shape[0])
    family_loop(M, p, out)
    return out
