"""Run stores written from synthetic systems (for the CLI and discovery tests)."""

from __future__ import annotations

from pathlib import Path

from detbal.store import Attempt, RunStore


def planted_store(pc, path: Path) -> Path:
    """Write a planted chain's counts (``detbal.systems.PlantedChain``) into a new run store at
    ``path`` as one synthetic run: every transition, self-loop and escape, with the features
    ``f1 .. fk`` stored per state (the CLI reads them back as ``stored_f1 ..``)."""
    c = pc.counts
    X = pc.features.X
    feats = {s: {f"f{j + 1}": float(X[i, j]) for j in range(X.shape[1])} for i, s in enumerate(c.states)}
    attempts = [Attempt(source=c.states[s], target=c.states[d], count=int(n), target_features=feats[c.states[d]])
                for s, d, n in zip(c.src, c.dst, c.count)]
    for i, s in enumerate(c.states):
        if c.self_loops[i]:
            attempts.append(Attempt(source=s, target=s, count=int(c.self_loops[i]), target_features=feats[s]))
        if c.escapes[i]:
            attempts.append(Attempt(source=s, escape="imported", count=int(c.escapes[i])))
    with RunStore(path) as st:
        st.record_attempts(st.create_run("synthetic", "planted", "none", {}), attempts)
    return path
