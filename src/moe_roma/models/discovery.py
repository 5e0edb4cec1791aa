"""Find the MoE routers of any transformers causal LM.

transformers 5 declares, per family, which module produces the router logits:
``PreTrainedModel._can_record_outputs["router_logits"]`` names the router class (and which item of
its output tuple holds the logits). We read that declaration, so a new family works without code;
``ROUTER_REGISTRY`` covers the few families that declare nothing or need a different rule.

The routing weights RoMA aligns are the router's *full* distribution over experts at a token:
``softmax(logits)`` for OLMoE / Qwen / Mixtral-style routers, ``sigmoid(logits)`` normalised to
sum to one for DeepSeek-V3-style routers (which score each expert independently).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from moe_roma.errors import ModelError

SCORING_RULES = ("softmax", "sigmoid")


@dataclass(frozen=True)
class RouterRule:
    """How to find and read one family's router when its declaration is missing or misleading."""

    class_name: str | None = None  # router class name; None: use the declared class
    logits_index: int | None = None  # position of the logits in the router's output tuple
    scoring: str | None = None  # None: infer from the router's code


# Exceptions only; everything else comes from the family's own declaration.
ROUTER_REGISTRY: dict[str, RouterRule] = {
    # Llama 4 declares no router recorder; its router returns (scores, logits).
    "llama4_text": RouterRule(class_name="Llama4Router", logits_index=1, scoring="sigmoid"),
    "llama4": RouterRule(class_name="Llama4Router", logits_index=1, scoring="sigmoid"),
    # Sigmoid-scored routers (each expert scored independently).
    "deepseek_v3": RouterRule(scoring="sigmoid"),
    "glm4_moe": RouterRule(scoring="sigmoid"),
    "dots1": RouterRule(scoring="sigmoid"),
    "longcat_flash": RouterRule(scoring="sigmoid"),
    # JetMoE declares two recorders (attention and MLP experts); the MLP gate is the router.
    "jetmoe": RouterRule(class_name="JetMoeTopKGating"),
}


@dataclass
class RouterInfo:
    """One MoE layer's router."""

    layer: int  # index of the decoder layer that holds it
    name: str  # module path, e.g. "model.layers.3.mlp.gate"
    module: nn.Module = field(repr=False)
    num_experts: int
    top_k: int
    scoring: str
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
    def scoring(self) -> str:
        return next(iter(self.routers.values())).scoring

    def select_layers(self, spec: str | list[int] | tuple[int, ...] = "last5") -> list[int]:
        """Parse a layer selection: ``last5``, ``all``, ``first2`` or ``"3,4,5"`` (decoder indices).

        >>> MoEInfo("x", "X", 8, {i: None for i in range(1, 8)}, "R").select_layers("last2")
        [6, 7]
        """
        layers = self.moe_layers
        if isinstance(spec, (list, tuple)):
            chosen = [int(x) for x in spec]
        else:
            text = str(spec).strip().lower()
            if text == "all":
                return layers
            match = re.fullmatch(r"(last|first)(\d+)", text)
            if match:
                n = int(match.group(2))
                if n < 1:
                    raise ModelError(f"layer selection {spec!r} must name at least one layer")
                return layers[-n:] if match.group(1) == "last" else layers[:n]
            try:
                chosen = [int(x) for x in text.split(",") if x.strip()]
            except ValueError:
                raise ModelError(
                    f"layer selection {spec!r} is not 'all', 'lastN', 'firstN' or a comma-separated list"
                ) from None
        bad = [x for x in chosen if x not in self.routers]
        if bad or not chosen:
            raise ModelError(
                f"layers {bad or chosen} are not MoE layers of {self.architecture} (MoE layers: {_ranges(layers)})"
            )
        return sorted(set(chosen))


def _declared_router(model: PreTrainedModel) -> tuple[type | None, int]:
    """The router class and logits index that the family declares in ``_can_record_outputs``."""
    for klass in type(model).__mro__:
        recorders = (getattr(klass, "_can_record_outputs", None) or {}).get("router_logits")
        if recorders is None:
            continue
        if not isinstance(recorders, (list, tuple)):
            recorders = [recorders]
        for rec in recorders:
            target = getattr(rec, "target_class", rec)
            index = getattr(rec, "index", 0) or 0
            if isinstance(target, type):
                return target, index
    return None, 0


def _infer_scoring(module: nn.Module) -> str:
    """Sigmoid-scored routers say so in their forward; softmax is the default."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return "softmax"
    return "sigmoid" if "sigmoid" in source and "softmax" not in source else "softmax"


def _layer_index(model: nn.Module, module_name: str) -> int:
    """Index of the decoder layer holding a module: the integer that follows a ModuleList."""
    parts = module_name.split(".")
    node: nn.Module = model
    for i, part in enumerate(parts):
        if isinstance(node, nn.ModuleList) and part.isdigit():
            return int(part)
        node = getattr(node, part)
        if i == len(parts) - 1:
            break
    raise ModelError(f"cannot tell which decoder layer holds router {module_name}")


def _num_experts(module: nn.Module, config) -> int:
    for attr in ("num_experts", "n_routed_experts", "num_local_experts"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    for attr in ("num_experts", "n_routed_experts", "num_local_experts"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelError(f"cannot tell the number of experts of {type(module).__name__}")


def _top_k(module: nn.Module, config) -> int:
    for obj in (module, config):
        for attr in ("top_k", "num_experts_per_tok", "moe_topk", "num_selected_experts"):
            value = getattr(obj, attr, None)
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
    >>> info.moe_layers, info.num_experts, info.scoring
    ([0, 1], 4, 'softmax')
    """
    config = model.config
    family = getattr(config, "model_type", "") or ""
    rule = ROUTER_REGISTRY.get(family, RouterRule())
    declared, index = _declared_router(model)
    logits_index = rule.logits_index if rule.logits_index is not None else index

    def is_router(module: nn.Module) -> bool:
        if rule.class_name is not None:
            return type(module).__name__ == rule.class_name
        return declared is not None and isinstance(module, declared)

    routers: dict[int, RouterInfo] = {}
    for name, module in model.named_modules():
        if not is_router(module):
            continue
        layer = _layer_index(model, name)
        if layer in routers:
            raise ModelError(f"{type(model).__name__}: two routers in decoder layer {layer}")
        scoring = rule.scoring or _infer_scoring(module)
        routers[layer] = RouterInfo(
            layer=layer,
            name=name,
            module=module,
            num_experts=_num_experts(module, config),
            top_k=_top_k(module, config),
            scoring=scoring,
            logits_index=logits_index,
        )
    if not routers:
        where = str(getattr(config, "_name_or_path", "") or "")  # the folder it was loaded from, if any
        prefix = f"{where}: " if where else ""
        raise ModelError(f"{prefix}no MoE routers found in {type(model).__name__}")
    num_layers = int(getattr(config, "num_hidden_layers", 0) or (max(routers) + 1))
    router_class = rule.class_name or (declared.__name__ if declared else "?")
    return MoEInfo(family, type(model).__name__, num_layers, routers, router_class)


def routing_weights(logits: torch.Tensor, scoring: str) -> torch.Tensor:
    """Turn router logits (..., E) into a distribution over all experts (sums to 1).

    Half-precision logits are promoted to float32; float64 stays float64 (gradient checks need it).

    >>> routing_weights(torch.zeros(1, 4), "softmax")
    tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    if logits.dtype != torch.float64:
        logits = logits.float()
    if scoring == "softmax":
        return torch.softmax(logits, dim=-1)
    if scoring == "sigmoid":
        scores = torch.sigmoid(logits)
        return scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-20)
    raise ModelError(f"unknown scoring rule {scoring!r}; known: {', '.join(SCORING_RULES)}")


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
