"""moe-roma: Routing Manifold Alignment (RoMA) for Mixture-of-Experts LLMs.

Only the routers of the last few MoE layers are post-trained, with a task loss plus a
manifold term that pulls each sample's routing weights towards those of its successful
neighbours in a sentence-embedding space.
"""

__version__ = "0.1.0"
