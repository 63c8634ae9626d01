"""Sandbox PSAs: real HTTP servers on loopback that `demo`, the tests and the
benchmarks talk to instead of a live tenant.

* :mod:`~psabill.sandbox.server`: the shared loopback server and its test knobs;
* :mod:`~psabill.sandbox.connectwise`: a ConnectWise PSA sandbox;
* :mod:`~psabill.sandbox.autotask`: an Autotask sandbox.
"""
