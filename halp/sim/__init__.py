"""
``python -m halp.sim``: a deterministic, seeded simulation of many HALP
servers and peers, running the project's real core, codec, protocols,
stores, client and federation code over a simulated clock
(:mod:`halp.sim.clock`) and network.
"""
