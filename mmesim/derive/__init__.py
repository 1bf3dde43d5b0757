"""Profiles worked out from published results: fits that run the simulator.

Kept apart from ``mmesim.calibrate`` (which measures a real Triton and must not depend on the
model of one): a derivation asks the simulator which parameters reproduce a published row."""
