"""Past one process: process groups, FSDP2 sharding of the frozen weights, data-parallel collection and
evaluation.

Sits above ``methods/`` (it shards the model the trainer then trains) and below ``eval/`` and
``commands/`` (which split their items across ranks through it). Nothing here re-implements
torch.distributed: it joins the group torchrun describes, shards with ``fully_shard`` over a
``DeviceMesh`` and moves bytes with ``all_gather``.
"""
