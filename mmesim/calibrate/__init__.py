"""Measurements -> ModelProfile: package a model, run it in a real Triton, measure memory,
load/unload time, execution time by batch, decode cost and overlap (run.calibrate), and the
reference's max-models-loaded procedure (maxmodels). blog derives profiles from published
figures instead."""
