"""Fitting speed of the fit agent: lock-step multi-start L-BFGS-B vs one scipy.optimize.minimize per start.

Usage: python bench/bench_fit.py [--starts 100] [--repeat 3]
Prints, per ansatz, the best-of-repeat wall time of the baseline (sequential
``minimize(method="L-BFGS-B", jac=True)`` per start, same exact gradients), ours
(all starts in lock step, one vectorised evaluation per round of requests), the
ratio, and both MSEs (they should agree).
"""

from __future__ import annotations

import argparse
import time



from detbal.agents.fit.ansatz import compile_ansatz, validate_ansatz  # noqa: E402
from detbal.agents.fit.data import load_dataset  # noqa: E402
from detbal.agents.fit.fitting import fit_parameters, fit_seed  # noqa: E402

ANSATZES = [
    "param1*log_v_k_nu + param2",
    "param1*tanh(param2*log_v_k_nu + param3) + param3",
    "param1 + param2*tanh(param3*(log_v_k_nu - param4))",
    "param1/(1 + exp(-param2*(log_v_k_nu - param3))) + param4*log_v_k_nu + param5",
    "param1*exp(-param2*log_v_k_nu) + param3*log(1 + exp(param2*log_v_k_nu))/param2",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ds = load_dataset("nikuradse_2")
    warm = compile_ansatz(validate_ansatz(ANSATZES[0]))
    fit_parameters(warm, ds.X, ds.y, starts=4)
    print(f"nikuradse_2, {ds.n_rows} points, {args.starts} starts, best of {args.repeat}")
    print(f"{'ansatz':58s} {'K':>2s} {'baseline s':>10s} {'ours s':>8s} {'ratio':>6s}  mse(baseline) mse(ours)")
    for text in ANSATZES:
        c = compile_ansatz(validate_ansatz(text))
        times = {}
        mses = {}
        for label, lockstep in (("baseline", False), ("ours", True)):
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = fit_parameters(c, ds.X, ds.y, starts=args.starts, seed=fit_seed(text, 0),
                                     lockstep=lockstep)
                best = min(best, time.perf_counter() - t0)
            times[label], mses[label] = best, res.mse
        print(f"{text[:58]:58s} {c.n_params:2d} {times['baseline']:10.3f} {times['ours']:8.3f} "
              f"{times['baseline'] / times['ours']:6.1f}  {mses['baseline']:.6g} {mses['ours']:.6g}")


if __name__ == "__main__":
    main()
