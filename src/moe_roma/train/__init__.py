"""Router-only post-training: RoMA's manifold-regularised objective and its ablations."""
