"""Every routing method, behind one registry: name -> (config dataclass, run function, kind).

Two kinds of method exist. A *weights* method changes the router weights and is then evaluated
like any model (``run(model, tokenizer, store, config, out_dir, graph=..., progress=...)``, e.g.
RoMA and router tuning, which differ only in ``regularizer.name``). A *test-time* method scores an
evaluation split itself, changing each item's routing while it answers
(``run(TestTimeInputs, config) -> TestTimeOutcome``, e.g. oracle routing and C3PO). ``base``
changes nothing. Adding a method is a module in ``methods/`` and one line in ``METHODS``; the
contracts live in ``methods/base.py``, so a method never imports this registry.

>>> sorted(METHODS)
['base', 'c3po', 'oracle', 'train']
>>> METHODS["oracle"].config().steps
20
"""

from __future__ import annotations

from moe_roma.methods.base import MethodSpec, NoConfig
from moe_roma.methods.c3po import C3POConfig, run_c3po
from moe_roma.methods.oracle import OracleConfig, run_oracle
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.methods.roma.trainer import train_routers

METHODS: dict[str, MethodSpec] = {
    "base": MethodSpec("base", "none", NoConfig, None, "the model as it is"),
    "train": MethodSpec(
        "train",
        "weights",
        TrainConfig,
        train_routers,
        "router post-training: RoMA (regularizer manifold), router tuning (none), ablations",
    ),
    "oracle": MethodSpec(
        "oracle",
        "test_time",
        OracleConfig,
        run_oracle,
        "per-item gradient descent on routing with the true label (upper bound)",
    ),
    "c3po": MethodSpec(
        "c3po",
        "test_time",
        C3POConfig,
        run_c3po,
        "test-time re-mixing of routing from successful neighbours (kernel or NGD)",
    ),
}


def method(name: str) -> MethodSpec:
    """The registered method ``name``, or a ``RomaError`` listing the known ones."""
    from moe_roma.io.errors import RomaError

    if name not in METHODS:
        raise RomaError(f"unknown method kind {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
