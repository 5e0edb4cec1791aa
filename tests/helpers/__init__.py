"""Test helpers shared by the suite: tiny models of every family, example data, training fixtures."""
