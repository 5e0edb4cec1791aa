"""Evaluation (stage 4): base against tuned routers on the same items, and the lm-evaluation-harness bridge.

The scoring itself (letter and continuation, statistics) is the engine in ``moe_roma.scoring``.
"""
