"""Probes: one module per kind behind one small protocol (:mod:`probes.base`).

:func:`probes.registry.build_probe` turns a probe config into a probe; the daemon's wiring is the
only caller. A probe never raises past ``observe``: every failure is an :class:`Observation`.
"""
