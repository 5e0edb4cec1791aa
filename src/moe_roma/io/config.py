"""The one configuration base: typed dataclasses read from YAML, ``key=value`` lists and flags.

A configuration is a dataclass deriving from ``Config``. Its fields are plain values (``int``,
``float``, ``bool``, ``str``, a ``Literal`` of choices, ``X | None``, a tuple or list of plain
values), nested configurations (its *sections*), or a structured value with its own ``parse``
(``field(metadata={"parse": fn})``). Every setting has one name, its dotted path
(``optimizer.lr``). Values are checked against the field's type, choices and declared range
(``field(metadata={"range": (0, None)})``) by one function, so YAML files, ``key=value`` lists,
command-line flags and Python refuse the same things with the same sentence; an unknown key is
refused with the nearest valid one.

Old spellings (a class's ``LEGACY_NAMES``, and, where ``LEAF_NAMES`` is set, a setting's leaf name
alone) are read only at the edges, ``from_yaml``, ``merge`` and the flags, each with a warning
naming its dotted name.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Run(Config):
...     epochs: int = field(default=3, metadata={"range": (1, None), "help": "passes over the data"})
...     lr: float = 1e-3
>>> Run.from_dict({"lr": "3e-3"}).merge(["epochs=2"]).to_dict()
{'epochs': 2, 'lr': 0.003}
>>> Run().merge(["epochs=0"])
Traceback (most recent call last):
...
moe_roma.io.errors.RomaError: setting 'epochs' must lie in [1, inf], got '0'
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from moe_roma.io.errors import RomaError, warn
from moe_roma.io.yamlfile import load_yaml_mapping

C = TypeVar("C", bound="Config")


class Config:
    """The base of every configuration dataclass: ``from_dict``, ``from_yaml``, ``merge``,
    ``to_dict``, ``validate``, and ``check`` for the rules one setting's range cannot say."""

    # Old flat names -> dotted path, accepted at the edges with a warning.
    LEGACY_NAMES: ClassVar[dict[str, str]] = {}
    # Earlier releases accepted a setting's leaf name alone where it was unique (``lr``).
    LEAF_NAMES: ClassVar[bool] = False

    @classmethod
    def from_dict(
        cls: type[C],
        values: Mapping[str, Any] | None = None,
        where: str = "",
        labels: Mapping[str, str] | None = None,
        what: str = "setting",
    ) -> C:
        """A checked instance from nested sections or dotted names; ``where`` prefixes errors (a
        file name and ``": "``), ``labels`` names a key as the user wrote it (``--lr``), ``what``
        names an unknown key's kind (``unknown training settings 'lrr'``)."""
        return _build(cls, flatten(cls, values or {}), where, labels, what=what)

    @classmethod
    def read(cls: type[C], values: Mapping[str, Any], where: str = "", what: str = "setting") -> C:
        """A checked instance from values as a file or command line holds them: sections or dotted
        names, and old spellings, each mapped with a warning."""
        return _build(cls, edge(cls, flatten(cls, values), where), where, what=what)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, what: str = "config file") -> C:
        """The settings of a YAML file (sections or dotted names), old spellings mapped."""
        return _build(cls, read_yaml(cls, path, what), f"{path}: ")

    @classmethod
    def from_command_line(
        cls: type[C],
        path: str | Path | None = None,
        flags: tuple[Mapping[str, Any], Mapping[str, str]] | None = None,
        overrides: Sequence[str] = (),
        recorded: Mapping[str, Any] | None = None,
    ) -> C:
        """Defaults <- ``recorded`` (what an input file says, e.g. a routing file's scoring) <- the
        ``--config`` YAML file <- flags (``config_flags``) <- ``key=value`` overrides; built once."""
        values: dict[str, Any] = {k: v for k, v in (recorded or {}).items() if v is not None}
        if path is not None:
            values.update(read_yaml(cls, path))
        given, labels = flags or ({}, {})
        values.update(given)
        later: dict[str, Any] = {}
        for item in overrides:  # each value as typed is checked, even one a later item replaces
            ((key, value),) = edge(cls, parse_dotlist([item])).items()
            later[key] = _build_value(cls, key, value)
        values.update(later)
        return _build(cls, values, labels={k: v for k, v in labels.items() if k not in later})

    def merge(
        self: C, changes: Sequence[str] | Mapping[str, Any], where: str = "", what: str = "setting"
    ) -> C:
        """A copy with ``changes`` applied: ``["optimizer.lr=3e-3", ...]`` or a mapping (old
        spellings mapped with a warning)."""
        values = changes if isinstance(changes, Mapping) else parse_dotlist(changes, where)
        return _build(
            type(self), edge(type(self), flatten(type(self), values), where), where, base=self, what=what
        )

    def to_dict(self) -> dict[str, Any]:
        """Nested plain values, sections as mappings (JSON- and YAML-ready)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def validate(self: C, where: str = "") -> C:
        """Check every setting of an instance built or changed in Python, in place; returns it."""
        for s in settings(type(self)):
            if s.parse is None:
                check_value(s, _get(self, s.path), where)
        _check_all(self, where)
        return self

    def check(self) -> None:
        """Cross-field rules; raise ``RomaError`` naming the settings."""


@dataclass(frozen=True)
class Setting:
    """One leaf of a configuration tree."""

    path: str  # dotted, e.g. "optimizer.lr"
    type: Any  # the resolved annotation
    default: Any
    help: str
    range: tuple[float | None, float | None] | None
    parse: Callable[[Any, str], Any] | None = None  # a structured value's own reader
    required: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def choices(self) -> tuple[Any, ...] | None:
        base = _strip_optional(self.type)
        return get_args(base) if get_origin(base) is Literal else None

    @property
    def optional(self) -> bool:
        return _is_optional(self.type)

    def type_name(self) -> str:
        base = _strip_optional(self.type)
        if get_origin(base) in (tuple, list):
            item = get_args(base)[0]
            text = {int: "a list of integers", float: "a list of numbers"}.get(item, "a list")
        elif self.choices:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
            text = names.get(base, str(base))
        return text + (" or none" if self.optional else "")


def is_config(cls: Any) -> bool:
    return isinstance(cls, type) and dataclasses.is_dataclass(cls)


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _strip_optional(tp: Any) -> Any:
    if _is_optional(tp):
        rest = [a for a in get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
    return tp


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _settings(cls: type, prefix: str) -> tuple[Setting, ...]:
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        tp, path = _hints(cls)[f.name], f"{prefix}{f.name}"
        if is_config(tp):
            out += _settings(tp, path + ".")
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default
        if f.default is dataclasses.MISSING and not required:
            default = f.default_factory()  # type: ignore[misc]
        meta = f.metadata
        out.append(
            Setting(path, tp, default, meta.get("help", ""), meta.get("range"), meta.get("parse"), required)
        )
    return tuple(out)


def settings(cls: type, prefix: str = "") -> Iterator[Setting]:
    """Every leaf setting of a configuration class, depth first, in field order."""
    return iter(_settings(cls, prefix))


def sections(cls: type) -> list[str]:
    """The names of a configuration's nested sections (``optimizer``, ``schedule``, ...)."""
    return [f.name for f in dataclasses.fields(cls) if is_config(_hints(cls)[f.name])]


# --- old spellings, read at the edges ------------------------------------------------------------


@functools.cache
def legacy_names(cls: type) -> dict[str, str]:
    """Every old spelling of ``cls``'s settings -> its dotted path: the unique leaf names (where the
    class says earlier releases took them), the class's ``LEGACY_NAMES``, and its sections' old
    spellings under the section's name (``train.lr`` -> ``train.optimizer.lr``)."""
    table: dict[str, str] = {}
    for name in sections(cls):
        table.update(
            {f"{name}.{old}": f"{name}.{new}" for old, new in legacy_names(_hints(cls)[name]).items()}
        )
    if cls.__dict__.get("LEAF_NAMES", False):
        leaves: dict[str, list[str]] = {}
        for s in settings(cls):
            leaves.setdefault(s.name, []).append(s.path)
        table.update(
            {leaf: found[0] for leaf, found in leaves.items() if len(found) == 1 and leaf != found[0]}
        )
    table.update(cls.__dict__.get("LEGACY_NAMES", {}))
    return table


def edge(cls: type, values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` with each old spelling replaced by its dotted name, and a warning naming it."""
    table = legacy_names(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        new = table.get(key)
        if new is not None and key not in _paths(cls):
            warn(f"{where}setting {key!r} is now {new!r}; the old name will go in a later release")
            key = new
        out[key] = value
    return out


@functools.cache
def short_names(cls: type) -> dict[str, str]:
    """Each setting's dotted path -> its shortest spelling of earlier releases: its unique leaf name,
    its legacy flat name where that leaf is a bare ``name`` (``regularizer``), else the path."""
    table = legacy_names(cls)
    legacy = {path: old for old, path in table.items()}
    out = {}
    for s in settings(cls):
        if s.name == "name" and s.path in legacy:
            out[s.path] = legacy[s.path]
        elif table.get(s.name, s.path if s.name == s.path else None) == s.path:
            out[s.path] = s.name
        else:
            out[s.path] = s.path
    return out


def short_settings(cfg: Config) -> dict[str, Any]:
    """A configuration in the shortest spelling of earlier releases: ``{"lr": 0.003, "regularizer":
    "none", ...}``. Its shape is frozen: ``router_config.json`` records it and the outcomes of an
    experiment are keyed on its hash, so that a run resumes across releases."""
    return {short: _get(cfg, path) for path, short in short_names(type(cfg)).items()}


# --- reading ----------------------------------------------------------------------------------------


@functools.cache
def _paths(cls: type) -> frozenset[str]:
    return frozenset(s.path for s in settings(cls))


def flatten(cls: type, mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML sections -> dotted keys; a mapping under a section name is that section."""
    out: dict[str, Any] = {}
    secs = set(sections(cls))
    for key, value in mapping.items():
        key = str(key).strip().replace("-", "_")
        if key in secs and isinstance(value, Mapping):
            out.update(flatten(_hints(cls)[key], value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_dotlist(items: Sequence[str], where: str = "") -> dict[str, Any]:
    """``["optimizer.lr=3e-3", "graph.k=5"]`` -> ``{"optimizer.lr": "3e-3", "graph.k": "5"}``, typed later."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise RomaError(f"{where}override {item!r} is not key=value")
        key, text = item.split("=", 1)
        out[key.strip().replace("-", "_")] = text
    return out


def read_yaml(cls: type, path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file's settings of ``cls`` by dotted name, old spellings mapped, every key and value
    checked now, so that an error names the file."""
    where = f"{path}: "
    values = edge(cls, flatten(cls, load_yaml_mapping(path, what, "a mapping of settings")), where)
    leaves = {s.path: s for s in settings(cls)}
    for key, value in values.items():
        if key not in leaves:
            raise _unknown(key, cls, where)
        check_value(leaves[key], value, where, name=key)
    return values


def _unknown(key: str, cls: type, where: str, label: str = "setting") -> RomaError:
    known = [*_paths(cls), *legacy_names(cls)]
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    # A typo of an old spelling finds its dotted name too.
    hint = f"; did you mean {legacy_names(cls).get(near[0], near[0])!r}?" if near else ""
    return RomaError(f"{where}unknown {label} {key!r}{hint}")


def _build(
    cls: type[C],
    values: Mapping[str, Any],
    where: str = "",
    labels: Mapping[str, str] | None = None,
    base: Any = None,
    what: str = "setting",
) -> C:
    """An instance of ``cls``: ``base`` (or the defaults) <- ``values`` (dotted keys), checked."""
    leaves = {s.path: s for s in settings(cls)}
    chosen: dict[str, Any] = {}
    for key, value in values.items():
        if key not in leaves:
            raise _unknown((labels or {}).get(key, key), cls, where, what)
        chosen[key] = check_value(leaves[key], value, where, name=(labels or {}).get(key, key))
    missing = [p for p, s in leaves.items() if s.required and p not in chosen and base is None]
    if missing:
        raise RomaError(f"{where}missing {missing[0]!r}")
    obj = _instantiate(cls, "", chosen, base)
    obj._read_from = where  # what `check` may name in a warning (the file)
    _check_all(obj, where)
    return obj


def _build_value(cls: type, key: str, value: Any, where: str = "") -> Any:
    leaves = {s.path: s for s in settings(cls)}
    if key not in leaves:
        raise _unknown(key, cls, where)
    return check_value(leaves[key], value, where, name=key)


def _instantiate(cls: type, prefix: str, chosen: Mapping[str, Any], base: Any) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        path, tp = f"{prefix}{f.name}", _hints(cls)[f.name]
        if is_config(tp):
            kwargs[f.name] = _instantiate(
                tp, path + ".", chosen, None if base is None else getattr(base, f.name)
            )
        elif path in chosen:
            kwargs[f.name] = chosen[path]
        elif base is not None:
            kwargs[f.name] = getattr(base, f.name)
    return cls(**kwargs)


def _check_all(obj: Any, where: str) -> None:
    """Each section's ``check``, inner sections first; its sentence gets the file's name."""
    for name in sections(type(obj)):
        _check_all(getattr(obj, name), where)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except RomaError as exc:
            if where and not str(exc).startswith(where):
                raise RomaError(f"{where}{exc}") from None
            raise


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def check_value(setting: Setting, value: Any, where: str = "", name: str | None = None) -> Any:
    """``value`` converted to the setting's type, or a ``RomaError`` naming the setting, value and rule.

    Strings are accepted where a number or boolean is expected (``key=value`` lists and YAML 1.1,
    which reads ``7e-5`` as a string), and a comma-separated string where a list is; non-finite
    numbers are refused unless the range allows them.
    """
    if setting.parse is not None:
        return setting.parse(value, where)
    label = name or setting.path
    flag = label.startswith("--")  # a command-line flag names itself: "--steps must ..."
    prefix = f"{where}{label}" if flag else f"{where}setting {label!r}"
    choices = setting.choices
    literal_none = choices is not None and isinstance(value, str) and value.strip() in choices
    if value is None or (
        not literal_none and isinstance(value, str) and value.strip().lower() in ("none", "null", "~")
    ):
        if setting.optional:
            return None
        raise RomaError(f"{prefix} must be {setting.type_name()}, got none")
    base = _strip_optional(setting.type)
    try:
        if get_origin(base) in (tuple, list):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not items:
                raise ValueError
            item_type = get_args(base)[0]
            out = get_origin(base)(_convert(item_type, item) for item in items)
        else:
            out = _convert(base, value)
    except (ValueError, TypeError):
        if choices and not flag:
            raise RomaError(f"{prefix} got {value!r}: {label} must be {setting.type_name()}") from None
        raise RomaError(f"{prefix} must be {setting.type_name()}, got {value!r}") from None
    for number in out if isinstance(out, (tuple, list)) else (out,):
        _check_range(setting, number, prefix, value)
    return out


def _convert(tp: Any, value: Any) -> Any:
    """``value`` as a ``tp`` (a plain type or a ``Literal``); ``ValueError`` if it is not one."""
    text = value.strip() if isinstance(value, str) else None
    if get_origin(tp) is Literal:
        out = value if value in get_args(tp) else text
        if out not in get_args(tp):
            raise ValueError
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return text.lower() in ("true", "yes", "1", "on")
        raise ValueError
    if isinstance(value, bool) and tp in (int, float):
        raise ValueError
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else int(text)  # type: ignore[arg-type]
    if tp is float:
        return float(value) if isinstance(value, (int, float)) else float(text)  # type: ignore[arg-type]
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError
        return str(value)
    raise RomaError(f"unsupported setting type {tp}")  # pragma: no cover - a config declared it


def _check_range(setting: Setting, out: Any, prefix: str, value: Any) -> None:
    if not isinstance(out, (int, float)) or isinstance(out, bool):
        return
    if (
        isinstance(out, float)
        and not math.isfinite(out)
        and not (setting.range and setting.range[1] == math.inf)
    ):
        raise RomaError(f"{prefix} must be a finite number, got {value!r}")
    if setting.range is not None:
        lo, hi = setting.range
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise RomaError(f"{prefix} must lie in {span}, got {value!r}")


# --- documentation and command-line flags ---------------------------------------------------------


def settings_table(cls: type) -> str:
    """A markdown table of every setting: dotted name, default, meaning (for the docs)."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for s in settings(cls):
        rows.append(f"| `{s.path}` | {_show(s.default)} | {s.help} |")
    return "\n".join(rows)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


_DEST = "cfg__"
_OLD = "__as__"  # dest of an old flag: cfg__<path>__as__<old name>


def add_config_flags(
    parser: argparse.ArgumentParser, classes: type | Mapping[str, type], skip: Sequence[str] = ()
) -> None:
    """One ``--dotted.name`` flag per setting, grouped by section, with its help, choices and default.

    ``classes`` is one configuration class, or several by name (``{"in-domain": BuildConfig, ...}``),
    whose settings are pooled and whose defaults the help lists. Values arrive as text and are typed
    by the config (``config_flags``); an unset flag stays unset. The old flags (``--lr``) stay,
    hidden, and warn with the new name."""
    named = classes if isinstance(classes, Mapping) else {"": classes}
    pooled: dict[str, tuple[Setting, dict[str, Any]]] = {}
    old: dict[str, str] = {}
    for label, cls in named.items():
        for s in settings(cls):
            if s.path in skip or s.parse is not None:
                continue
            pooled.setdefault(s.path, (s, {}))[1][label] = s.default
        old.update({k: v for k, v in legacy_names(cls).items() if v not in skip})
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, (s, defaults) in pooled.items():
        section = path.rsplit(".", 1)[0] if "." in path else ""
        target: Any = parser
        if section:
            if section not in groups:
                groups[section] = parser.add_argument_group(f"{section} settings")
            target = groups[section]
        shown = "; ".join(f"{k}: {_show(v)}" if k else _show(v) for k, v in defaults.items())
        meta = "|".join(map(str, s.choices)) if s.choices else s.name.upper()
        help_text = f"{s.help} (default: {shown})" if s.help else f"default: {shown}"
        flag = "--" + path.replace("_", "-")
        target.add_argument(flag, dest=_DEST + path.replace(".", "__"), metavar=meta, help=help_text)
    taken = {o for a in parser._actions for o in a.option_strings}
    for name, path in old.items():
        flag = "--" + name.replace("_", "-")
        if flag not in taken and path in pooled:
            dest = _DEST + path.replace(".", "__") + _OLD + name
            parser.add_argument(flag, dest=dest, help=argparse.SUPPRESS)


def config_flags(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The config flags a user set: ``({dotted path: text}, {dotted path: the flag as written})``,
    with a warning for each old flag."""
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for key, value in sorted(vars(args).items(), key=lambda kv: _OLD not in kv[0]):
        if not key.startswith(_DEST) or value is None:
            continue
        dotted, _, old = key[len(_DEST) :].partition(_OLD)
        path = dotted.replace("__", ".")
        flag = "--" + (old or path).replace("_", "-")
        if old:
            warn(f"{flag} is now --{path.replace('_', '-')}; the old flag will go in a later release")
        values[path], labels[path] = value, flag
    return values, labels
