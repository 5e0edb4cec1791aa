"""diagnose: will router post-training help on this model and data? Measurements from one collection pass."""
