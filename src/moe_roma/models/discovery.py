"""Find the MoE routers of any transformers causal LM.

transformers 5 declares, per family, which module produces the router logits:
``PreTrainedModel._can_record_outputs["router_logits"]`` names the router class (and which item of
its output tuple holds the logits). We read that declaration, so a new family works without code;
``ROUTER_REGISTRY`` covers the few families that declare nothing or need a different rule.

The routing weights RoMA aligns are the router's *full* distribution over experts at a token:
``softmax(logits)`` for OLMoE / Qwen / Mixtral-style routers, ``sigmoid(logits)`` normalised to
sum to one for DeepSeek-V3-style routers (which score each expert independently). Which of the two
a router uses, its *gate function* (``RouterInfo.gate_function``), is read from its code (or from
the config field its code reads it from); a router that scores experts any other way is refused
rather than misread.
"""

from __future__ import annotations

import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from moe_roma.io.errors import ModelError

GATE_FUNCTIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class RouterRule:
    """How to find and read one family's router when its declaration is missing or misleading."""

    class_name: str | None = None  # router class name; None: use the declared class
    logits_index: int | None = None  # position of the logits in the router's output tuple
    gate_function: str | None = None  # None: infer from the router's code
    not_inside: str | None = None  # skip routers nested in a module of this class (they route something else)
    logits_from: str | None = None  # child computing the logits, when the router returns probabilities
    num_experts_attr: str | None = None  # router attribute counting all routing choices, if not num_experts
    unsupported: str | None = None  # why RoMA cannot represent this family's routing


# Exceptions only; everything else comes from the family's own declaration.
ROUTER_REGISTRY: dict[str, RouterRule] = {
    # Llama 4's router returns (scores, logits). Its declaration sits on the inner text model, which we now
    # read too and which agrees with this rule; the rule stays for releases that declare nothing.
    "llama4_text": RouterRule(class_name="Llama4Router", logits_index=1, gate_function="sigmoid"),
    "llama4": RouterRule(class_name="Llama4Router", logits_index=1, gate_function="sigmoid"),
    # Sigmoid-scored routers (each expert scored independently).
    "deepseek_v3": RouterRule(gate_function="sigmoid"),
    "glm4_moe": RouterRule(gate_function="sigmoid"),
    "dots1": RouterRule(gate_function="sigmoid"),
    # JetMoE declares two recorders: its attention is a mixture of heads with its own JetMoeTopKGating;
    # the token router RoMA trains is the one of the MLP experts.
    "jetmoe": RouterRule(class_name="JetMoeTopKGating", not_inside="JetMoeAttention"),
    # Gemma 4's router returns softmax probabilities as its "logits"; its ``proj`` computes the logits.
    "gemma4_text": RouterRule(logits_from="proj"),
    "gemma4": RouterRule(logits_from="proj"),
    # LongCat-Flash routes among real and zero-computation (identity) experts; all are routing choices.
    "longcat_flash": RouterRule(num_experts_attr="n_routed_experts"),
    "zaya": RouterRule(
        unsupported="its router is an MLP that carries state from the previous layer's router and adds a "
        "'skip' class to the experts, so its logits are not a linear map of the hidden state RoMA can shift"
    ),
    "doge": RouterRule(
        unsupported="its product-key router scores two halves of an expert key (router_logits are "
        "(2, tokens, sqrt(num_experts))), not one logit per expert"
    ),
}


@dataclass(frozen=True)
class _Recorder:
    """One ``router_logits`` recorder as transformers declares it (an ``OutputRecorder`` or a bare class)."""

    target: type | None
    index: int
    layer_name: str | None = None
    class_name: str | None = None  # module-name suffix, for recorders declared by name

    def matches(self, name: str, module: nn.Module) -> bool:
        # Same test as transformers' own hook installation, so we see the modules it records.
        hit = (self.target is not None and isinstance(module, self.target)) or (
            self.class_name is not None and name.endswith(self.class_name)
        )
        if hit and self.layer_name is not None:
            hit = f".{self.layer_name.strip('.')}." in f".{name}."
        return hit


@dataclass
class RouterInfo:
    """One MoE layer's router."""

    layer: int  # index of the decoder layer that holds it
    name: str  # module path, e.g. "model.layers.3.mlp.gate"
    module: nn.Module = field(repr=False)
    num_experts: int
    top_k: int
    gate_function: str  # "softmax" or "sigmoid": how the router turns logits into expert scores
    logits_index: int = 0

    @property
    def parameter_names(self) -> list[str]:
        """Full names of the router's trainable tensors, as in the base model's state dict."""
        return [f"{self.name}.{n}" for n, _ in self.module.named_parameters()]

    def parameters(self) -> list[nn.Parameter]:
        return list(self.module.parameters())


@dataclass
class MoEInfo:
    """Everything RoMA needs to know about a model's routers."""

    family: str
    architecture: str
    num_layers: int
    routers: dict[int, RouterInfo]  # by decoder-layer index, MoE layers only
    router_class: str

    @property
    def moe_layers(self) -> list[int]:
        return sorted(self.routers)

    @property
    def num_experts(self) -> int:
        counts = {r.num_experts for r in self.routers.values()}
        if len(counts) != 1:
            raise ModelError(f"{self.architecture}: MoE layers have different expert counts {sorted(counts)}")
        return counts.pop()

    @property
    def gate_function(self) -> str:
        return next(iter(self.routers.values())).gate_function

    def select_layers(self, spec: str | list[int] | tuple[int, ...] = "last5") -> list[int]:
        """Parse a layer selection: ``last5``, ``all``, ``first2`` or ``"3,4,5"`` (decoder indices).

        >>> MoEInfo("x", "X", 8, {i: None for i in range(1, 8)}, "R").select_layers("last2")
        [6, 7]
        """
        layers = self.moe_layers
        parsed = parse_layer_spec(spec)
        if parsed == "all":
            return layers
        if isinstance(parsed, tuple):
            side, n = parsed
            if n > len(layers):
                raise ModelError(
                    f"layer selection {spec!r} asks for {n} MoE layers but {self.architecture} has "
                    f"{len(layers)} (choose {side}{len(layers)} or fewer, or all)"
                )
            return layers[-n:] if side == "last" else layers[:n]
        chosen = parsed
        bad = [x for x in chosen if x not in self.routers]
        if bad or not chosen:
            raise ModelError(
                f"layers {bad or chosen} are not MoE layers of {self.architecture} (MoE layers: "
                f"{_ranges(layers)})"
            )
        return sorted(set(chosen))


def parse_layer_spec(spec: str | list[int] | tuple[int, ...]) -> str | tuple[str, int] | list[int]:
    """A layer selection's syntax, checked without a model: ``"all"``, ``("last", 5)``, or a list of indices.

    >>> parse_layer_spec("last5"), parse_layer_spec(" 3, 4 ")
    (('last', 5), [3, 4])
    """
    if isinstance(spec, (list, tuple)):
        try:
            return [int(x) for x in spec]
        except (TypeError, ValueError):
            raise ModelError(f"layer selection {spec!r} must list integer layer indices") from None
    text = str(spec).strip().lower()
    if text == "all":
        return "all"
    match = re.fullmatch(r"(last|first)(\d+)", text)
    if match:
        n = int(match.group(2))
        if n < 1:
            raise ModelError(f"layer selection {spec!r} must name at least one layer")
        return match.group(1), n
    try:
        chosen = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        chosen = None
    if not chosen:
        raise ModelError(
            f"layer selection {spec!r} is not 'all', 'lastN', 'firstN' or a comma-separated list of layer "
            "indices"
        )
    if len(set(chosen)) != len(chosen):
        raise ModelError(f"layer selection {spec!r} names a layer twice")
    return chosen


def _declared_recorders(model: PreTrainedModel) -> list[_Recorder]:
    """The ``router_logits`` recorders the family declares in ``_can_record_outputs``.

    The declaration may sit on the causal LM class or only on its inner text model (Gemma 4, Llama 4).
    """
    inner = [type(m) for m in model.modules() if isinstance(m, PreTrainedModel) and m is not model]
    owners = [type(model), *inner]
    for owner in owners:
        specs = (getattr(owner, "_can_record_outputs", None) or {}).get("router_logits")
        if specs is None:
            continue
        found = []
        for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
            if isinstance(spec, str):  # a bare name: transformers reads item 1 of the output
                found.append(_Recorder(None, 1, class_name=spec))
            elif isinstance(spec, type):  # a bare class: item 1 as well
                found.append(_Recorder(spec, 1))
            else:
                found.append(
                    _Recorder(
                        getattr(spec, "target_class", None),
                        int(getattr(spec, "index", 0) or 0),
                        getattr(spec, "layer_name", None),
                        getattr(spec, "class_name", None),
                    )
                )
        return found
    return []


# Calls that reveal a router's gate function, and the config fields that choose it at run time
# (``scoring_func``, ``expert_selection_fn``, ...).
_GATE_CALLS = {"softmax": "softmax", "log_softmax": "softmax", "sigmoid": "sigmoid", "logsigmoid": "sigmoid"}
_GATE_SETTING = re.compile(r"scor|selection_fn")


def _source_tokens(obj) -> list[str]:
    """Names and operators of ``obj``'s source: no comments, no strings."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return []
    kept = (tokenize.NAME, tokenize.OP)
    return [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type in kept]


@functools.cache
def _code_tokens(klass: type) -> tuple[str, ...]:
    """Identifier and operator tokens of a class, its non-torch bases and the module-level helpers
    they call (Phi-MoE's ``sparsemixer``). Comments and strings are left out, so a comment such as
    "sigmoid instead of softmax" cannot decide the rule."""
    tokens: list[str] = []
    for base in klass.__mro__:
        if base is object or base.__module__.startswith("torch"):
            continue
        own = _source_tokens(base)
        tokens += own
        namespace = vars(sys.modules.get(base.__module__, inspect))
        for name in dict.fromkeys(own):
            helper = namespace.get(name)
            if inspect.isfunction(helper) and helper.__module__ == base.__module__:
                tokens += _source_tokens(helper)
    return tuple(tokens)


def _config_values(config, key: str) -> list:
    """``key`` in the config, its text config and its sub-configs (DBRX nests its MoE settings)."""
    configs = [config]
    text = config.get_text_config() if hasattr(config, "get_text_config") else None
    if text is not None and text is not config:
        configs.append(text)
    for sub in getattr(config, "sub_configs", None) or {}:
        value = getattr(config, sub, None)
        if value is not None and not isinstance(value, dict):
            configs.append(value)
    return [getattr(c, key) for c in configs if hasattr(c, key)]


def _infer_gate_function(router: nn.Module, holder: nn.Module | None, config) -> str:
    """The gate function, ``softmax`` or ``sigmoid``, read from the router's code; raises for any other.

    A router whose code picks its function from the config (``ACT2FN[config.scoring_func]``,
    ``config.expert_selection_fn``) uses the configured one. A router that returns raw logits is
    scored by the module holding it (DBRX), so that module's code decides.
    """
    name = type(router).__name__
    tokens = _code_tokens(type(router))
    for i in range(len(tokens) - 2):
        if tokens[i] == "config" and tokens[i + 1] == "." and _GATE_SETTING.search(tokens[i + 2]):
            for value in _config_values(config, tokens[i + 2]):
                if isinstance(value, str):
                    if value not in GATE_FUNCTIONS:
                        raise ModelError(
                            f"{name} scores experts with {value!r} (config.{tokens[i + 2]}); RoMA supports "
                            f"{' and '.join(GATE_FUNCTIONS)} routers"
                        )
                    return value
    for klass in (type(router), type(holder) if holder is not None else None):
        if klass is None:
            continue
        kinds = {_GATE_CALLS[t] for t in _code_tokens(klass) if t in _GATE_CALLS}
        if len(kinds) == 1:
            return kinds.pop()
        if kinds:
            raise ModelError(f"cannot tell whether {name} scores experts with softmax or sigmoid")
    raise ModelError(f"cannot tell how {name} scores experts (no softmax or sigmoid in its code)")


def _layer_index(model: nn.Module, module_name: str) -> tuple[int, int]:
    """Index of the decoder layer holding a module (the integer that follows a ModuleList) and the
    number of decoder layers (that ModuleList's length)."""
    parts = module_name.split(".")
    node: nn.Module = model
    for i, part in enumerate(parts):
        if isinstance(node, nn.ModuleList) and part.isdigit():
            return int(part), len(node)
        node = getattr(node, part)
        if i == len(parts) - 1:
            break
    raise ModelError(f"cannot tell which decoder layer holds router {module_name}")


_EXPERT_COUNTS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
_TOP_KS = (
    "top_k",
    "num_experts_per_tok",
    "moe_topk",
    "num_selected_experts",
    "top_k_experts",
    "moe_top_k",
    "moe_k",
    "num_experts_per_token",
)


def _num_experts(module: nn.Module, config, attr: str | None = None) -> int:
    for name in (attr,) if attr else _EXPERT_COUNTS:
        value = getattr(module, name, None)
        if isinstance(value, int) and value > 0:
            return value
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    # A router wrapping one linear map (DBRX, JetMoE, HunYuan) has one logit per output of it.
    linears = [m for m in module.children() if isinstance(m, nn.Linear)]
    if len(linears) == 1:
        return linears[0].out_features
    for name in _EXPERT_COUNTS:
        for value in _config_values(config, name):
            if isinstance(value, int) and value > 0:
                return value
    raise ModelError(f"cannot tell the number of experts of {type(module).__name__}")


def _top_k(module: nn.Module, holder: nn.Module | None, config) -> int:
    for obj in (module, holder):
        for attr in _TOP_KS:
            value = getattr(obj, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    for attr in _TOP_KS:
        for value in _config_values(config, attr):
            if isinstance(value, int) and value > 0:
                return value
    return 1


def discover_routers(model: PreTrainedModel) -> MoEInfo:
    """Find every MoE router of ``model`` (a transformers causal LM object).

    Raises ``ModelError("no MoE routers found in LlamaForCausalLM")`` for a dense model.

    >>> from transformers import OlmoeConfig, OlmoeForCausalLM
    >>> cfg = OlmoeConfig(vocab_size=64, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
    ...                   num_attention_heads=2, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2)
    >>> info = discover_routers(OlmoeForCausalLM(cfg))
    >>> info.moe_layers, info.num_experts, info.gate_function
    ([0, 1], 4, 'softmax')
    """
    config = model.config
    family = getattr(config, "model_type", "") or ""
    rule = ROUTER_REGISTRY.get(family, RouterRule())
    if rule.unsupported:
        raise ModelError(f"{type(model).__name__} is not supported: {rule.unsupported}")
    recorder_of = _recorder_finder(model, rule)
    modules = dict(model.named_modules())
    excluded = [n for n, m in modules.items() if rule.not_inside and type(m).__name__ == rule.not_inside]
    routers: dict[int, RouterInfo] = {}
    num_layers, router_class = 0, rule.class_name or "?"
    for name, module in modules.items():
        recorder = recorder_of(name, module)
        if recorder is None or any(name.startswith(f"{n}.") for n in excluded):
            continue
        layer, num_layers = _layer_index(model, name)
        if layer in routers:
            raise ModelError(f"{type(model).__name__}: two routers in decoder layer {layer}")
        routers[layer] = _router_info(layer, name, module, modules, recorder, rule, config)
        router_class = type(module).__name__
    if not routers:
        where = str(getattr(config, "_name_or_path", "") or "")  # the folder it was loaded from, if any
        prefix = f"{where}: " if where else ""
        raise ModelError(f"{prefix}no MoE routers found in {type(model).__name__}")
    return MoEInfo(family, type(model).__name__, num_layers, routers, router_class)


def _recorder_finder(
    model: PreTrainedModel, rule: RouterRule
) -> Callable[[str, nn.Module], _Recorder | None]:
    """Which modules of ``model`` are routers, and where their logits are: a function of a module
    (and its name) to its recorder, or None for a module that is not a router."""
    recorders = _declared_recorders(model)
    if rule.class_name is not None:
        # The rule names the router class; its declared recorder (if any) says where the logits are.
        named = [r for r in recorders if r.target is not None and r.target.__name__ == rule.class_name]
        recorders = named or [_Recorder(None, 0)]

    def recorder_of(name: str, module: nn.Module) -> _Recorder | None:
        if rule.class_name is not None:
            return recorders[0] if type(module).__name__ == rule.class_name else None
        return next((r for r in recorders if r.matches(name, module)), None)

    return recorder_of


def _router_info(
    layer: int,
    name: str,
    module: nn.Module,
    modules: dict[str, nn.Module],
    recorder: _Recorder,
    rule: RouterRule,
    config,
) -> RouterInfo:
    """The router ``module`` of decoder layer ``layer``: its experts, top-k, gate function and where
    its logits are (a ``logits_from`` submodule when the rule names one)."""
    holder = modules.get(name.rpartition(".")[0])
    gate_function = rule.gate_function or _infer_gate_function(module, holder, config)
    top_k = _top_k(module, holder, config)
    num_experts = _num_experts(module, config, rule.num_experts_attr)
    logits_index = rule.logits_index if rule.logits_index is not None else recorder.index
    if rule.logits_from is not None:
        name, module, logits_index = (
            f"{name}.{rule.logits_from}",
            module.get_submodule(rule.logits_from),
            0,
        )
    return RouterInfo(
        layer=layer,
        name=name,
        module=module,
        num_experts=num_experts,
        top_k=top_k,
        gate_function=gate_function,
        logits_index=logits_index,
    )


def routing_weights(logits: torch.Tensor, gate_function: str) -> torch.Tensor:
    """Turn router logits (..., E) into a distribution over all experts (sums to 1).

    Half-precision logits are promoted to float32; float64 stays float64 (gradient checks need it).

    >>> routing_weights(torch.zeros(1, 4), "softmax")
    tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    if logits.dtype != torch.float64:
        logits = logits.float()
    if gate_function == "softmax":
        return torch.softmax(logits, dim=-1)
    if gate_function == "sigmoid":
        scores = torch.sigmoid(logits)
        return scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    raise ModelError(f"unknown gate function {gate_function!r}; known: {', '.join(GATE_FUNCTIONS)}")


def _ranges(xs: list[int]) -> str:
    if not xs:
        return "none"
    out, start, prev = [], xs[0], xs[0]
    for x in [*xs[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if x is not None:
            start = prev = x
    return ", ".join(out)
