"""The typed configuration of ``roma experiment`` and ``roma demo``: one file, read once, checked whole.

    name: ablation-k
    data: {testbed: true}
    seeds: [0, 1, 2]
    train: {layers: last3, scoring: continuation, schedule: {epochs: 3}, optimizer: {lr: 0.01}}
    methods:
      - {name: base, kind: base}
      - {name: roma, kind: train}
    ablations:
      - {axis: graph.k, values: [1, 5]}    # adds methods "roma[k=1]" and "roma[k=5]"

``ExperimentConfig`` holds the shared settings (``train``, a ``TrainConfig``), the data
(``DataConfig``), the seeds and the methods; each method is typed by the method registry: a kind
whose config is the ``train`` section's class starts from that section and applies its
``overrides``, any other kind reads its ``options`` into its own config. Everything a run would
otherwise find late (a method that trains with another scoring than the grid collects with, a
``paired`` name that is no method, a ``metrics_split`` that is no split) is refused when the file
is read, in one sentence naming the file and the key.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_roma.io.config import Config, short_names
from moe_roma.io.errors import RomaError
from moe_roma.io.outputs import safe_name
from moe_roma.io.yamlfile import load_yaml_mapping
from moe_roma.methods.registry import METHODS
from moe_roma.methods.roma.config import TrainConfig
from moe_roma.scoring import DEFAULT_SCORING, Scoring

DEFAULT_SPLITS = ["in_dist", "shifted", "heldout_tasks"]
SOURCE_KEYS = {"source", "preset", "fields", "limit", "task"}
FIELD_KEYS = {"question", "choices", "answer", "context"}
METHOD_KEYS = ("name", "kind", "overrides", "options")


@dataclass
class Method:
    """A row label, the registered method kind that produces it (``moe_roma.methods.registry``), and
    its settings: a ``TrainConfig`` for ``train`` (the shared settings with this method's changes),
    the kind's own config otherwise. ``train_fraction`` trains on a seeded share of the set."""

    name: str
    kind: str = "train"
    config: Any = None
    overrides: dict = field(default_factory=dict)  # as written in the experiment file, for the tables
    train_fraction: float = 1.0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- data ---------------------------------------------------------------------------------------------


def source(entry: Any, where: str) -> dict:
    """One data source: a path or ``hf:`` spec, or a mapping ``{source, preset, fields: {question,
    choices, answer, context}, limit, task}``; checked without reading any data."""
    from moe_roma.data.presets import get_preset

    if isinstance(entry, str):
        entry = {"source": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str) or not entry["source"]:
        raise RomaError(
            f"{where}: a data source is a path, an hf:NAME[:CONFIG][:SPLIT] spec, or a mapping with "
            f"'source', got {entry!r}"[:300]
        )
    unknown = sorted(set(entry) - SOURCE_KEYS)
    if unknown:
        raise RomaError(
            f"{where}: unknown keys {unknown} in a data source (known: {', '.join(sorted(SOURCE_KEYS))})"
        )
    if entry.get("preset") is not None:
        get_preset(
            str(entry["preset"]), entry["source"]
        )  # an unknown preset fails here, naming the known ones
    fields = entry.get("fields")
    if fields is not None:
        if (
            not isinstance(fields, dict)
            or not {"question", "choices", "answer"} <= set(fields)
            or set(fields) - FIELD_KEYS
        ):
            raise RomaError(
                f"{where}: 'fields' must map question, choices and answer (and optionally context) to "
                "column names"
            )
        if entry.get("preset") is not None:
            raise RomaError(f"{where}: give 'preset' or 'fields', not both")
    limit = entry.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise RomaError(f"{where}: 'limit' must be a positive integer, got {limit!r}")
    if entry["source"].startswith("hf:"):
        from moe_roma.data.hf_source import parse_hub_spec

        parse_hub_spec(entry["source"])
    return entry


def _train_sources(value: Any, where: str) -> list[dict] | None:
    """``data.train``: one source or a list of them (their examples are concatenated in order)."""
    if value is None:
        return None
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise RomaError(f"{where}'data.train' lists no sources")
    return [source(e, f"{where}data.train[{i}]") for i, e in enumerate(entries)]


def _eval_sources(value: Any, where: str) -> dict[str, dict] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise RomaError(f"{where}'data.eval' must map split names to data sources, got {_short(value)}")
    return {str(name): source(e, f"{where}data.eval.{name}") for name, e in value.items()}


def _testbed(value: Any, where: str) -> str | None:
    # `testbed: true` is the default testbed; or name it.
    from moe_roma.testbed import DEFAULT_TESTBED, TESTBEDS

    if value is None or value is False:
        return None
    name = DEFAULT_TESTBED if value is True else str(value)
    if name not in TESTBEDS:
        raise RomaError(f"{where}unknown testbed {name!r} (known: {', '.join(TESTBEDS)})")
    return name


def _split_names(value: Any, where: str) -> list[str] | None:
    """``data.train_split``: a split name or a list of them (which ones exist, ``check`` says)."""
    if value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    if isinstance(value, str):
        return [value]
    raise RomaError(f"{where}'data.train_split' must name one or more training splits, got {_short(value)}")


@dataclass
class DataConfig(Config):
    """The model and the data: the bundled testbed, or a model and data sources."""

    testbed: str | None = field(
        default=None, metadata={"parse": _testbed, "help": "`in-domain` (or true), `downstream`"}
    )
    splits: list[str] | None = field(
        default=None, metadata={"help": "testbed splits to score (default in_dist, shifted, heldout_tasks)"}
    )
    suite_seed: int = field(default=0, metadata={"help": "the testbed suite's seed"})
    train_split: list[str] | None = field(
        default=None, metadata={"parse": _split_names, "help": "testbed split(s) to train on (default train)"}
    )
    train_size: int | None = field(default=None, metadata={"help": "train on the first N testbed items"})
    validation: float | None = field(
        default=None, metadata={"help": "hold out this share of the training items as the split validation"}
    )
    model: str | None = field(default=None, metadata={"help": "model: a Hugging Face id or a folder"})
    train: list[dict] | None = field(default=None, metadata={"parse": _train_sources})
    eval: dict[str, dict] | None = field(default=None, metadata={"parse": _eval_sources})
    format: str | None = field(default=None, metadata={"help": "data format (default: detected)"})

    def check(self) -> None:
        if self.validation is not None and not 0 < self.validation <= 0.5:
            raise RomaError(
                "'data.validation' must be the share of train to hold out, in (0, 0.5], "
                f"got {self.validation!r}"
            )
        if self.testbed is None:
            if self.train_split is not None or self.train_size is not None:
                given = [k for k in ("train_split", "train_size") if getattr(self, k) is not None]
                raise RomaError(
                    "'data.train_split' and 'data.train_size' choose testbed splits (cut a file with "
                    f"'limit'), got {given!r}"
                )
            if self.model is None or self.train is None or self.eval is None:
                raise RomaError("'data' needs 'model', 'train' and 'eval' (or testbed: true)")
            return
        from moe_roma.testbed import testbed_split_names

        known = [s for s in testbed_split_names(self.testbed) if s != "train"]
        unknown = [s for s in self.eval_names() if s not in known and s != "validation"]
        if unknown:
            raise RomaError(f"unknown testbed splits {unknown} (known: {', '.join(known)}, validation)")
        self.training_splits()
        if "validation" in self.eval_names() and not self.validation and "validation" not in known:
            raise RomaError("the split 'validation' needs 'data.validation' (the share of train to hold out)")

    def eval_names(self) -> list[str]:
        """The evaluation splits as the file names them (the testbed's, or ``eval``'s keys)."""
        if self.testbed is not None:
            return list(self.splits if self.splits is not None else DEFAULT_SPLITS)
        return list(self.eval or {})

    def split_names(self) -> list[str]:
        """Every split a run scores, in order: a held-out ``validation`` first unless named."""
        names = self.eval_names()
        return names if not self.validation or "validation" in names else ["validation", *names]

    def training_splits(self) -> list[str]:
        """``train_split``: the testbed split(s) to train on (default ``train``), checked."""
        names = self.train_split if self.train_split is not None else ["train"]
        known = ("train", "train_large") if self.testbed == "downstream" else ("train",)
        if not names or any(n not in known for n in names):
            chosen = names[0] if len(names) == 1 else names
            raise RomaError(
                f"'data.train_split' must name one or more training splits of the {self.testbed} "
                f"testbed ({', '.join(known)}), got {chosen!r}"
            )
        return list(names)


# --- methods ------------------------------------------------------------------------------------------


@dataclass
class MethodEntry:
    """One ``methods`` item as written: a name, a registered kind, and its settings."""

    name: str
    kind: str = "train"
    settings: dict = field(default_factory=dict)  # `overrides` or `options`, as written


def _methods(value: Any, where: str) -> list[MethodEntry]:
    if not isinstance(value, list) or not value:
        raise RomaError(f"{where}'methods' must be a non-empty list, got {_short(value)}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "name" not in m:
            raise RomaError(f"{where}methods[{i}] needs a 'name'")
        unknown = sorted(set(m) - set(METHOD_KEYS))
        if unknown:
            raise RomaError(
                f"{where}methods[{i}] ({m['name']}): unknown keys {unknown} (known: {', '.join(METHOD_KEYS)})"
            )
        kind = m.get("kind", "train")
        if kind not in METHODS:
            raise RomaError(
                f"{where}methods[{i}] ({m['name']}): unknown kind {kind!r} ({', '.join(METHODS)})"
            )
        given = m.get("overrides") or m.get("options") or {}
        if not isinstance(given, dict):
            raise RomaError(f"{where}methods[{i}] ({m['name']}): 'overrides' must be a mapping of settings")
        out.append(
            MethodEntry(safe_name(m["name"], where.removesuffix(": "), "method name"), kind, dict(given))
        )
    return out


@dataclass
class Ablation:
    """An axis of a trained method's settings: one more method per value."""

    axis: str
    values: list
    base: str = "roma"
    label: str = "{base}[{axis}={value}]"  # {axis}: the setting's short name (graph.k -> k)


def _ablations(value: Any, where: str) -> list[Ablation]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RomaError(f"{where}'ablations' must be a list, got {_short(value)}")
    out = []
    for j, ab in enumerate(value):
        if (
            not isinstance(ab, dict)
            or "axis" not in ab
            or "values" not in ab
            or not isinstance(ab["values"], list)
        ):
            raise RomaError(f"{where}ablations[{j}] needs 'axis' and 'values' (a list)")
        out.append(
            Ablation(
                str(ab["axis"]),
                list(ab["values"]),
                str(ab.get("base", "roma")),
                str(ab.get("label", Ablation.label)),
            )
        )
    return out


def _paired(value: Any, where: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RomaError(f"{where}'paired' must be a list of [method, method] pairs, got {value!r}"[:300])
    return [tuple(p) if isinstance(p, (list, tuple)) else p for p in value]


# --- the experiment ----------------------------------------------------------------------------------


@dataclass
class ExperimentConfig(Config):
    """A grid of methods x seeds over one model and data: what ``plan`` and ``run`` take."""

    name: str | None = field(
        default=None, metadata={"help": "results go to runs/<name> (default: the file's stem)"}
    )
    data: DataConfig = field(default_factory=DataConfig)
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"range": (0, 2**32 - 1)})
    scoring: Scoring = field(default=DEFAULT_SCORING, metadata={"help": "how every split is scored"})
    batch_size: int = field(default=32, metadata={"range": (1, None)})
    limit: int | None = field(
        default=None, metadata={"range": (1, None), "help": "first N items of each split"}
    )
    metrics_split: str | None = field(
        default=None, metadata={"help": "routing metrics on this split (default: the first)"}
    )
    collect_layers: str = field(default="all", metadata={"help": "layers whose base routing is collected"})
    routing_metrics: bool = field(
        default=True, metadata={"help": "measure base and trained methods' routing on metrics_split"}
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: list[MethodEntry] = field(default_factory=list, metadata={"parse": _methods})
    ablations: list[Ablation] = field(default_factory=list, metadata={"parse": _ablations})
    paired: list[tuple[str, str]] = field(default_factory=list, metadata={"parse": _paired})

    @classmethod
    def from_yaml(cls, path: str | Path, what: str = "experiment configuration") -> ExperimentConfig:
        """The experiment of a YAML file (read once); old spellings mapped with a warning."""
        mapping = load_yaml_mapping(path, what, "a mapping with 'methods', 'seeds' and 'data'")
        return cls.from_mapping(mapping, path)

    @classmethod
    def from_mapping(cls, mapping: dict, path: str | Path | None = None) -> ExperimentConfig:
        """The experiment of a mapping as a file holds it; ``path`` names it in errors and gives the
        default ``name``."""
        where = f"{path}: " if path is not None else ""
        for key in ("methods", "data"):
            if key not in mapping:
                raise RomaError(f"{where}missing '{key}'")
        if not isinstance(mapping["data"], dict):
            raise RomaError(f"{where}'data' must be a mapping, got {_short(mapping['data'])}")
        if mapping.get("train") is not None and not isinstance(mapping["train"], dict):
            raise RomaError(
                f"{where}'train' must be a mapping of training settings, got {_short(mapping['train'])}"
            )
        values = {k: v for k, v in mapping.items() if not (k == "train" and v is None)}
        cfg = cls.read(values, where, what="key")
        cfg.source, cfg.path = copy.deepcopy(mapping), path
        if cfg.name is None:
            cfg.name = Path(path).stem if path is not None else "experiment"
        safe_name(cfg.name, str(path or "experiment"), "'name'")
        return cfg

    def merge(self, changes: Any, where: str = "") -> ExperimentConfig:
        """A copy with dotted changes (``["seeds=0,1", "data.testbed=in-domain"]``), read again from
        the file's mapping so that every method sees them."""
        from moe_roma.io.config import parse_dotlist

        mapping = copy.deepcopy(getattr(self, "source", None) or self.to_dict())
        for key, value in (changes if isinstance(changes, dict) else parse_dotlist(changes, where)).items():
            node = mapping
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return ExperimentConfig.from_mapping(mapping, getattr(self, "path", None))

    def with_train_settings(self, changes: list[str]) -> ExperimentConfig:
        """A copy whose ``train`` section and every trained method take ``changes`` (``key=value``),
        over each method's own overrides (``roma demo lr=0.003``)."""
        cfg = copy.copy(self)
        cfg.train = self.train.merge(changes)
        cfg._grid = [
            Method(m.name, m.kind, m.config.merge(changes), m.overrides, m.train_fraction)
            if isinstance(m.config, TrainConfig)
            else m
            for m in self.grid()
        ]
        return cfg

    def where(self) -> str:
        return f"{self.path}: " if getattr(self, "path", None) is not None else ""

    def check(self) -> None:
        self._grid = self._expand()
        names = [m.name for m in self._grid]
        for m in self._grid:
            if isinstance(m.config, TrainConfig) and m.config.scoring != self.scoring:
                raise RomaError(
                    f"method {m.name} trains with scoring={m.config.scoring}, but the grid collects its "
                    f"routing with {self.scoring} scoring; set 'scoring' in 'train' (or the method) to "
                    f"{self.scoring}"
                )
        check_paired(self.paired, names)
        splits = self.data.split_names()
        if self.metrics_split is not None and self.metrics_split not in splits:
            raise RomaError(
                f"'metrics_split' {self.metrics_split!r} is not one of the splits ({', '.join(splits)})"
            )
        from moe_roma.models.discovery import parse_layer_spec

        try:
            parse_layer_spec(self.collect_layers)
        except RomaError as exc:
            raise RomaError(f"'collect_layers': {exc}") from None

    def metrics_split_used(self) -> str | None:
        """The split of the routing metrics: ``metrics_split``, else the first split; None without them."""
        return (self.metrics_split or self.data.split_names()[0]) if self.routing_metrics else None

    def grid(self) -> list[Method]:
        """Every method of the grid with its typed settings, ablations expanded (built once)."""
        if getattr(self, "_grid", None) is None:
            self._grid = self._expand()
        return self._grid

    def _expand(self) -> list[Method]:
        methods = []
        for entry in self.methods:
            spec = METHODS[entry.kind]
            what = f"{getattr(self, '_read_from', '')}method {entry.name}: "
            given = dict(entry.settings)
            fraction = 1.0
            if spec.kind == "weights" and "train_fraction" in given:
                fraction = float(given.pop("train_fraction"))
                if not 0 < fraction <= 1:
                    raise RomaError(f"{what}train_fraction must lie in (0, 1], got {fraction}")
            if spec.config is type(self.train):  # a trained method: the shared settings, then its own
                config = self.train.merge(given, what, what="training settings")
            else:
                config = spec.config.from_dict(given, what)
            methods.append(Method(entry.name, entry.kind, config, dict(entry.settings), fraction))
        for j, ab in enumerate(self.ablations):
            base = next((m for m in methods if m.name == ab.base), None)
            if base is None or not isinstance(base.config, TrainConfig):
                raise RomaError(f"ablations[{j}]: base method {ab.base!r} is not a trained method")
            for value in ab.values:
                axis = short_names(TrainConfig).get(ab.axis, ab.axis)
                label = ab.label.format(base=ab.base, axis=axis, value=value)
                label = safe_name(
                    label, "ablations", "method name"
                )  # runs/<method> is a folder of the results
                setting = {ab.axis: value}
                if ab.axis == "train_fraction":
                    config, fraction = base.config, float(value)
                else:
                    where = f"{getattr(self, '_read_from', '')}ablations[{j}]: "
                    config = base.config.merge(setting, where, what="training settings")
                    fraction = base.train_fraction
                methods.append(Method(label, base.kind, config, {**base.overrides, **setting}, fraction))
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise RomaError(f"method names must be unique, got {names}")
        return methods


def check_paired(pairs: list, methods: list[str]) -> None:
    """``paired`` is a list of ``[A, B]`` pairs of two different methods of the grid."""
    for pair in pairs:
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(p in methods for p in pair)
        if not ok or pair[0] == pair[1]:
            bad = [p for p in pair if p not in methods] if isinstance(pair, (list, tuple)) else []
            near = difflib.get_close_matches(str(bad[0]), methods, n=1) if bad else []
            hint = f"; did you mean {near[0]!r}?" if near else f" (methods: {', '.join(methods)})"
            shown = list(pair) if isinstance(pair, tuple) else pair
            raise RomaError(
                f"'paired' entries must be [method, method] of two methods of this grid, got {shown!r}{hint}"
            )
