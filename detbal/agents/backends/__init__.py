"""Language-model backends behind one small interface (:class:`~detbal.agents.backends.base.Backend`)."""
