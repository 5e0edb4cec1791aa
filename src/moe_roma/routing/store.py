"""The routing store: what collection records per training sample, on disk and in memory.

On disk it is the RoMA-code routing JSON (a dict keyed by sample id with ``input_text``,
``last_token_routing``, ``correct_answer``, ``model_answer``, ``is_correct``), so files written by
the method's public code and by ours are interchangeable. We add a few keys that the public format
lacks (``question``, ``choices``, ``answer_index``, ``task``) so that later stages need nothing
else. Beside it, a safetensors side-car holds the same routing as one (N, L, E) tensor, which later
stages read fast, and what collection recorded about itself (model, position, scoring, top-k).

The side-car is checked against the JSON by content: it records the SHA-256 of what the JSON says
(``content_sha256``: each sample's fields, whatever the indentation, key order or escapes) and of
its own tensors (``tensors_sha256``). Re-formatting the JSON keeps both, and the metadata with them;
a side-car written for other content (another collect run's, or the JSON was edited since) or whose
tensors changed is ignored with a warning, and the JSON alone is read. Routing that is not finite or
is negative is refused wherever it enters: the JSON's weights, the side-car's tensor, a collection.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moe_roma import __version__
from moe_roma.data.example import LETTERS
from moe_roma.io.atomic import write_json_atomic
from moe_roma.io.errors import DataError, warn
from moe_roma.io.paths import check_regular_file
from moe_roma.io.tensorfile import load_tensors, save_tensors
from moe_roma.models.discovery import MoEInfo

FORMAT_VERSION = 2  # 2: the side-car records content_sha256 and tensors_sha256 (1: the JSON's bytes)
MAX_EXPERTS = 1 << 16  # an expert index past this is a typo or a hostile file, not a model
_EXPERT_KEY = re.compile(r"expert_(\d+)")
_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])[).:]\s+(.*)$")


@dataclass
class RoutingStore:
    """Per-sample routing of the base model at the last prompt token, plus answers.

    ``routing[i, l]`` is sample i's distribution over experts in decoder layer ``layers[l]``.
    """

    ids: list[str]
    input_texts: list[str]
    layers: list[int]
    routing: torch.Tensor  # (N, L, E) float32, each (i, l) row sums to 1
    answer_index: list[int]  # gold answer, 0-based
    model_answer: list[int]  # the base model's answer, 0-based (-1: unknown)
    is_correct: list[bool]
    token_ids: list[int]
    token_texts: list[str]
    questions: list[str | None] = field(default_factory=list)
    choices: list[tuple[str, ...] | None] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    continuations: list[str | None] = field(default_factory=list)  # partial scoring (WinoGrande)
    # (N, D) L2-normalised sentence embeddings of the questions (``roma collect --embed``), or None; the
    # embedder's name is ``meta["embedder"]``. Saved in the side-car only, so other tools never see them.
    embeddings: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.questions = self.questions or [None] * n
        self.choices = self.choices or [None] * n
        self.tasks = self.tasks or ["default"] * n
        self.continuations = self.continuations or [None] * n

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_experts(self) -> int:
        return int(self.routing.shape[-1])

    @property
    def successful(self) -> list[int]:
        """Indices of the samples the base model answered right: the successful set S."""
        return [i for i, ok in enumerate(self.is_correct) if ok]

    @property
    def accuracy(self) -> float:
        return sum(self.is_correct) / max(len(self), 1)

    def subset(self, indices: list[int]) -> RoutingStore:
        pick = lambda xs: [xs[i] for i in indices]  # noqa: E731
        return RoutingStore(
            pick(self.ids),
            pick(self.input_texts),
            list(self.layers),
            self.routing[indices].clone(),
            pick(self.answer_index),
            pick(self.model_answer),
            pick(self.is_correct),
            pick(self.token_ids),
            pick(self.token_texts),
            pick(self.questions),
            pick(self.choices),
            pick(self.tasks),
            dict(self.meta),
            pick(self.continuations),
            self.embeddings[indices].clone() if self.embeddings is not None else None,
        )

    def fit_to_model(self, info: MoEInfo, path: str | Path | None = None) -> None:
        """Check the routing against the model it will train, and pad it in place to the model's expert count.

        Routing recorded for another model is refused: layers must be MoE layers, experts must fit.
        Sparse routing dicts may never name the last experts; those columns become zeros.
        """
        bad = [layer for layer in self.layers if layer not in info.routers]
        if bad:
            raise DataError(
                path,
                None,
                f"layers {bad} are not MoE layers of {info.architecture} (its MoE layers: "
                f"{info.moe_layers}); was this routing recorded with another model?",
            )
        if self.num_experts > info.num_experts:
            raise DataError(
                path,
                None,
                f"routing has {self.num_experts} experts but {info.architecture} has {info.num_experts}; "
                "was this routing recorded with another model?",
            )
        if self.num_experts < info.num_experts:  # sparse dicts that never named the last experts
            pad = torch.zeros(*self.routing.shape[:-1], info.num_experts - self.num_experts)
            self.routing = torch.cat([self.routing, pad], dim=-1)


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".safetensors")


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(raw: dict) -> str:
    """SHA-256 of what a parsed routing JSON says, not how it is written: every sample by id, with its
    fields in sorted order (numbers as the floats they parse to), whatever the order of the samples."""
    h = hashlib.sha256()
    for sid, entry in sorted(raw.items()):
        text = json.dumps([sid, entry], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of tensors by name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def check_routing_values(routing: torch.Tensor, ids: list[str], path: str | Path | None, what: str) -> None:
    """Refuse (N, L, E) routing with a NaN, an infinity, a negative weight, or a layer summing to 0."""
    bad_rows = (~torch.isfinite(routing) | (routing < 0)).any(-1) | ~(routing.sum(-1) > 0)
    if not bad_rows.any():
        return
    i, li = (int(x) for x in bad_rows.nonzero()[0])
    row = routing[i, li]
    if not torch.isfinite(row).all():
        problem = f"not finite ({float(row[~torch.isfinite(row)][0])})"
    elif (row < 0).any():
        problem = f"negative ({float(row.min())})"
    else:
        problem = "all zero"
    sid = ids[i] if i < len(ids) else str(i)
    raise DataError(
        path,
        f"id {sid}",
        f"{what} at layer position {li} is {problem}; routing weights must be finite and non-negative",
    )


def save_routing_store(store: RoutingStore, path: str | Path) -> None:
    """Write the RoMA-code JSON and its tensor side-car, each atomically."""
    path = Path(path)
    check_routing_values(store.routing.float(), store.ids, path, "the collected routing")
    entries = {}
    for i, sid in enumerate(store.ids):
        layers = [
            {
                "layer": layer,
                "routing_weights": {
                    f"expert_{e}": float(w) for e, w in enumerate(store.routing[i, li].tolist())
                },
            }
            for li, layer in enumerate(store.layers)
        ]
        entry = {
            "input_text": store.input_texts[i],
            "last_token_routing": {
                "token_id": int(store.token_ids[i]),
                "token_text": store.token_texts[i],
                "layers": layers,
            },
            "correct_answer": LETTERS[store.answer_index[i]],
            "model_answer": LETTERS[store.model_answer[i]] if store.model_answer[i] >= 0 else None,
            "is_correct": bool(store.is_correct[i]),
            "answer_index": int(store.answer_index[i]),
            "task": store.tasks[i],
        }
        if store.questions[i] is not None:
            entry["question"] = store.questions[i]
        if store.choices[i] is not None:
            entry["choices"] = list(store.choices[i])
        if store.continuations[i] is not None:
            entry["continuation"] = store.continuations[i]
        entries[sid] = entry
    write_json_atomic(path, entries, indent=None)
    tensors = {
        "routing": store.routing.float().contiguous(),
        "is_correct": torch.tensor(store.is_correct, dtype=torch.uint8),
        "answer_index": torch.tensor(store.answer_index, dtype=torch.int64),
        "model_answer": torch.tensor(store.model_answer, dtype=torch.int64),
    }
    if store.embeddings is not None:
        tensors["embeddings"] = store.embeddings.float().contiguous()
    meta = {
        **{k: v for k, v in store.meta.items() if k not in SIDECAR_KEYS},
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        # What the JSON says (floats round-trip through JSON unchanged) and what the side-car holds.
        "content_sha256": content_sha256(entries),
        "tensors_sha256": tensors_sha256(tensors),
        "ids": store.ids,
        "layers": store.layers,
    }
    try:
        save_tensors(sidecar_path(path), tensors, meta)
    except BaseException:
        path.unlink(missing_ok=True)  # no JSON without its side-car: a failed save leaves nothing
        raise


def load_routing_store(path: str | Path) -> RoutingStore:
    """Read a routing JSON (ours or written by others) into a ``RoutingStore``.

    Others' files may list experts sparsely: missing experts count as 0 and each layer is
    renormalised to sum to 1. Every sample must list the same layers.
    """
    path = check_regular_file(path, "routing file")
    repeated: list[list[str]] = [[]]  # repeated keys of the last JSON object parsed: the outermost one
    try:
        raw = json.loads(
            path.read_text(encoding="utf-8"), object_pairs_hook=lambda pairs: _no_repeats(pairs, repeated)
        )
    except UnicodeDecodeError:
        raise DataError(path, None, "not a UTF-8 text file (is it a routing JSON?)") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"line {exc.lineno}", f"malformed JSON ({exc.msg})") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(path, None, "expected a non-empty JSON object keyed by sample id")
    if repeated[0]:
        raise DataError(path, f"id {repeated[0][0]}", "duplicate id: the file lists this sample twice")
    # A side-car written for this JSON's content holds the same routing as tensors: take them and skip
    # parsing every expert weight, which dominates the load time of large files.
    side, tensors = _matching_sidecar(path, raw)
    store = _parse_entries(path, raw, routing=tensors.get("routing") if tensors else None)
    store.meta.update(side)
    emb = tensors.get("embeddings") if tensors else None
    if emb is not None and emb.ndim == 2 and emb.shape[0] == len(store):
        if not torch.isfinite(emb).all():
            raise DataError(sidecar_path(path), None, "the question embeddings hold NaN or infinite values")
        store.embeddings = emb.float()
    return store


def _no_repeats(pairs: list[tuple[str, object]], repeated: list[list[str]]) -> dict:
    """A JSON object as a dict, noting its repeated keys (plain json.loads keeps the last silently)."""
    obj: dict = {}
    twice = []
    for key, value in pairs:
        if key in obj:
            twice.append(key)
        obj[key] = value
    repeated[0] = twice
    return obj


SIDECAR_KEYS = (
    "ids",
    "layers",
    "json_sha256",
    "content_sha256",
    "tensors_sha256",
)  # the side-car's own bookkeeping


def _matching_sidecar(path: Path, raw: dict) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """(metadata, tensors) of the side-car when it was written for this JSON's content, else ({}, None).

    A side-car that is there but does not match is ignored with a warning: its numbers and its
    metadata (position, scoring, top-k) are another file's, so the JSON alone decides.
    """
    side = sidecar_path(path)
    if not side.is_file():
        return {}, None
    try:
        meta, tensors = load_tensors(side, "routing side-car")
    except DataError as exc:
        warn(f"{side} cannot be read ({exc.problem}); reading the routing from {path.name} alone")
        return {}, None
    if "content_sha256" in meta:
        why = None
        if meta["content_sha256"] != content_sha256(raw):
            why = (
                f"it was written for other content than {path.name} (another collect run's, or the JSON was "
                "edited)"
            )
        elif meta.get("tensors_sha256") != tensors_sha256(tensors):
            why = "its tensors were changed after it was written"
    elif meta.get("json_sha256") != _fingerprint(path):  # format 1: the hash of the JSON's bytes
        why = f"it was written for another version of {path.name}"
    else:
        why = None
    if why is not None:
        without = "without the side-car's metadata (position, scoring, top-k)"
        warn(f"{side} is ignored: {why}; the routing is read from {path.name} alone, {without}")
        return {}, None
    order = meta.get("ids")
    if isinstance(order, list) and order != list(raw):  # the same samples, listed in another order
        if sorted(order) != sorted(raw):
            warn(
                f"{side} is ignored: it lists other samples than {path.name}; the routing is read from the "
                "JSON alone"
            )
            return {}, None
        pos = {sid: i for i, sid in enumerate(order)}
        pick = torch.tensor([pos[sid] for sid in raw])
        tensors = {k: v[pick] if v.ndim and v.shape[0] == len(order) else v for k, v in tensors.items()}
    routing = tensors.get("routing")
    if routing is not None:
        check_routing_values(routing, list(raw), side, "the side-car's routing tensor")
    if "scoring_rule" in meta:  # written before the gate function had its own name
        meta.setdefault("gate_function", meta.pop("scoring_rule"))
    return {k: v for k, v in meta.items() if k not in SIDECAR_KEYS}, tensors


def load_routing_tensors(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The side-car's tensors when it matches the JSON, else None (read the JSON instead)."""
    path = check_regular_file(path, "routing file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _matching_sidecar(path, raw)[1] if isinstance(raw, dict) else None


def _letter_index(path: Path, sid: str, key: str, value, n_choices: int | None) -> int:
    if isinstance(value, bool) or value is None:
        raise DataError(path, f"id {sid}", f"'{key}' must be an answer letter, got {value!r}")
    if isinstance(value, int):
        idx = value
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        idx = LETTERS.index(value.strip().upper())
    elif isinstance(value, str) and value.strip().isdigit():
        idx = int(value.strip()) - 1  # ARC-style "1".."4"
    else:
        raise DataError(path, f"id {sid}", f"'{key}' must be an answer letter, got {value!r}")
    if idx < 0 or (n_choices is not None and idx >= n_choices):
        raise DataError(path, f"id {sid}", f"'{key}' {value!r} is not among the {n_choices} choices")
    return idx


def _check_encodable(path: Path, where: str, key: str, value) -> None:
    """Refuse text a tokenizer cannot take: a lone surrogate escape such as "\\ud800" decodes in JSON, and
    text beyond the data loaders' length limit."""
    from moe_roma.data.formats._common import MAX_TEXT_CHARS

    limit = (
        5 * MAX_TEXT_CHARS if key == "input_text" else MAX_TEXT_CHARS
    )  # a prompt holds a passage and choices
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str) and len(text) > limit:
            raise DataError(path, where, f"'{key}' is {len(text)} characters long; the limit is {limit}")
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(
                    path, where, f"'{key}' contains an invalid character {text[exc.start]!r}"
                ) from None


def _choices_from_prompt(text: str) -> tuple[str, ...] | None:
    """Recover lettered choices ("A. x" / "A) x" lines) from a RoMA-code ``input_text``."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        m = _CHOICE_LINE.match(line)
        if m:
            found.append((m.group(1), m.group(2).strip()))
    letters = "".join(letter for letter, _ in found)
    if len(found) >= 2 and letters == LETTERS[: len(found)]:
        return tuple(t for _, t in found)
    return None


@dataclass
class _Columns:
    """The fields of a routing file's entries, one list per field, in the file's order."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    rows: list[list[dict[int, float]]] = field(default_factory=list)  # per entry, per layer: expert -> weight
    gold: list[int] = field(default_factory=list)
    model_answers: list[int] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)
    questions: list[str | None] = field(default_factory=list)
    choices: list[tuple[str, ...] | None] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    continuations: list[str | None] = field(default_factory=list)

    def store(self, layers: list[int], routing: torch.Tensor) -> RoutingStore:
        return RoutingStore(
            self.ids,
            self.texts,
            layers,
            routing,
            self.gold,
            self.model_answers,
            self.correct,
            self.token_ids,
            self.token_texts,
            self.questions,
            self.choices,
            self.tasks,
            {},
            self.continuations,
        )


def _parse_entries(path: Path, raw: dict, routing: torch.Tensor | None = None) -> RoutingStore:
    """The store of a parsed routing JSON; ``routing`` (N, L, E) from a matching side-car replaces the
    per-weight parsing (the entries' other fields are still read and checked)."""
    if routing is not None and (routing.ndim != 3 or routing.shape[0] != len(raw)):
        routing = None  # not this file's tensor after all: parse the JSON
    cols = _Columns()
    layer_list: list[int] | None = None
    max_expert = -1
    for sid, entry in raw.items():
        where = f"id {sid}"
        text, ch, layers_here, dists = _entry_routing(path, where, entry, parse_weights=routing is None)
        max_expert = max([max_expert, *(max(dist) for dist in dists)])
        if layer_list is None:
            layer_list = layers_here
        elif layers_here != layer_list:
            raise DataError(path, where, f"lists layers {layers_here} but earlier samples list {layer_list}")
        cols.ids.append(str(sid))
        cols.texts.append(text)
        cols.rows.append(dists)
        _entry_fields(path, sid, entry, ch, cols)
    layers = list(layer_list or [])
    if routing is not None and routing.shape[1] == len(layers):
        return cols.store(layers, routing.float())
    if routing is not None:  # the side-car disagrees with the JSON's layers: parse the weights after all
        return _parse_entries(path, raw)
    # Filled in numpy: element writes into a torch tensor cost ~30x more per weight.
    filled = np.zeros((len(cols.ids), len(layers), max_expert + 1), dtype=np.float32)
    for i, dists in enumerate(cols.rows):
        for li, dist in enumerate(dists):
            filled[i, li, list(dist)] = list(dist.values())
    dense = torch.from_numpy(filled)
    return cols.store(layers, dense / dense.sum(dim=-1, keepdim=True))


def _entry_routing(
    path: Path, where: str, entry: object, parse_weights: bool
) -> tuple[str, tuple[str, ...] | None, list, list[dict[int, float]]]:
    """One entry's required fields checked, and its prompt, choices, layers and (with
    ``parse_weights``) each layer's weights by expert."""
    if not isinstance(entry, dict):
        raise DataError(path, where, "entry is not a JSON object")
    for key in ("input_text", "last_token_routing", "correct_answer", "is_correct"):
        if key not in entry:
            raise DataError(path, where, f"missing field '{key}'")
    text = entry["input_text"]
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, where, "'input_text' must be a non-empty string")
    for key in ("input_text", "question", "choices", "continuation", "task"):
        _check_encodable(path, where, key, entry.get(key))
    if not isinstance(entry["is_correct"], bool):
        raise DataError(path, where, f"'is_correct' must be true or false, got {entry['is_correct']!r}")
    ltr = entry["last_token_routing"]
    if not isinstance(ltr, dict) or not isinstance(ltr.get("layers"), list) or not ltr["layers"]:
        raise DataError(path, where, "'last_token_routing.layers' must be a non-empty list")
    ch = entry.get("choices")
    if ch is not None:
        if not isinstance(ch, list) or not all(isinstance(c, str) for c in ch) or not 2 <= len(ch) <= 26:
            raise DataError(path, where, "'choices' must be a list of 2 to 26 strings")
        ch = tuple(ch)
    else:
        ch = _choices_from_prompt(text)
    if not parse_weights:
        return text, ch, [item.get("layer") if isinstance(item, dict) else None for item in ltr["layers"]], []
    layers_here: list[int] = []
    dists: list[dict[int, float]] = []
    for item in ltr["layers"]:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("layer"), int)
            or isinstance(item.get("layer"), bool)
        ):
            raise DataError(path, where, "each routing layer needs an integer 'layer'")
        dist = _layer_weights(path, where, item)
        if item["layer"] in layers_here:
            raise DataError(path, where, f"lists layer {item['layer']} twice")
        layers_here.append(item["layer"])
        dists.append(dist)
    return text, ch, layers_here, dists


def _layer_weights(path: Path, where: str, item: dict) -> dict[int, float]:
    """One layer's ``routing_weights``: expert index -> weight, each checked, summing to a positive number."""
    weights = item.get("routing_weights")
    if not isinstance(weights, dict) or not weights:
        raise DataError(path, where, f"layer {item['layer']}: 'routing_weights' must be a non-empty object")
    dist: dict[int, float] = {}
    for key, w in weights.items():
        m = _EXPERT_KEY.fullmatch(str(key))
        if not m:
            raise DataError(path, where, f"layer {item['layer']}: expert key {key!r} is not 'expert_<i>'")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise DataError(
                path,
                where,
                f"layer {item['layer']}: weight of {key} must be a finite number >= 0, got {w!r}",
            )
        expert = int(m.group(1))
        if expert >= MAX_EXPERTS:
            raise DataError(
                path,
                where,
                f"layer {item['layer']}: expert index {expert} is implausible "
                f"(more than {MAX_EXPERTS} experts); was this file written by hand?",
            )
        dist[expert] = float(w)
    total = sum(dist.values())
    if total <= 0:
        raise DataError(path, where, f"layer {item['layer']}: routing weights sum to 0")
    if not math.isfinite(total):
        raise DataError(path, where, f"layer {item['layer']}: routing weights sum to {total} (they overflow)")
    return dist


def _entry_fields(path: Path, sid: str, entry: dict, ch: tuple[str, ...] | None, cols: _Columns) -> None:
    """One entry's answers (checked against its choices and its ``is_correct``) and its other fields,
    appended to ``cols``."""
    where = f"id {sid}"
    n_choices = len(ch) if ch else None
    gold_idx = entry.get("answer_index")
    if not isinstance(gold_idx, int) or isinstance(gold_idx, bool):
        gold_idx = _letter_index(path, sid, "correct_answer", entry["correct_answer"], n_choices)
    elif n_choices is not None and not 0 <= gold_idx < n_choices:
        raise DataError(path, where, f"'answer_index' {gold_idx} is not among the {n_choices} choices")
    cols.gold.append(gold_idx)
    ma = entry.get("model_answer")
    model_answer = -1 if ma in (None, "") else _letter_index(path, sid, "model_answer", ma, n_choices)
    cols.model_answers.append(model_answer)
    if model_answer >= 0 and entry["is_correct"] != (model_answer == gold_idx):
        raise DataError(
            path,
            where,
            f"'is_correct' is {str(entry['is_correct']).lower()} but 'model_answer' "
            f"{LETTERS[model_answer]} {'differs from' if entry['is_correct'] else 'equals'} the correct "
            f"answer {LETTERS[gold_idx]}; fix the file (or drop 'model_answer')",
        )
    cols.correct.append(entry["is_correct"])
    ltr = entry["last_token_routing"]
    tid = ltr.get("token_id", -1)
    cols.token_ids.append(tid if isinstance(tid, int) and not isinstance(tid, bool) else -1)
    cols.token_texts.append(str(ltr.get("token_text", "")))
    q = entry.get("question")
    cols.questions.append(q if isinstance(q, str) else None)
    cols.choices.append(ch)
    t = entry.get("task")
    cols.tasks.append(t if isinstance(t, str) and t else "default")
    c = entry.get("continuation")
    cols.continuations.append(c if isinstance(c, str) else None)
