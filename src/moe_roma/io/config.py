"""Typed configuration loading: nested dataclasses from YAML mappings and ``key=value`` overrides.

A configuration is a dataclass whose fields are plain values (``int``, ``float``, ``bool``, ``str``,
a ``Literal`` of choices, or ``X | None``) or nested configuration dataclasses (its *sections*).
Every setting has a dotted path (``optimizer.lr``); a leaf name that occurs once in the whole
tree may be written alone (``lr``), and a section may declare old flat names in
``LEGACY_NAMES`` (``{"regularizer": "regularizer.name"}``). Values are checked against the
field's type, choices and declared range (``field(metadata={"range": (0, None)})``) by one
function, so YAML files, ``key=value`` overrides, command-line flags and the Python API refuse the
same things with the same sentence. An unknown key is refused with the nearest valid one.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Opt:
...     lr: float = field(default=1e-3, metadata={"range": (0, None), "help": "learning rate"})
>>> @dataclass
... class Run:
...     epochs: int = 3
...     optimizer: Opt = field(default_factory=Opt)
>>> build_config(Run, {"lr": "3e-3"}, overrides=["epochs=2"]).optimizer.lr
0.003
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from moe_roma.io.errors import RomaError
from moe_roma.io.yamlfile import load_yaml_mapping


@dataclass(frozen=True)
class Setting:
    """One leaf of a configuration tree."""

    path: str  # dotted, e.g. "optimizer.lr"
    type: Any  # the resolved annotation
    default: Any
    help: str
    range: tuple[float | None, float | None] | None
    aliases: tuple[str, ...]  # extra command-line spellings, e.g. ("lambda",)

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
        if get_origin(base) is tuple:
            text = "a list of numbers" if get_args(base)[0] in (int, float) else "a list"
        elif self.choices:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            text = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
                base, str(base)
            )
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


def settings(cls: type, prefix: str = "") -> Iterator[Setting]:
    """Every leaf setting of a configuration class, depth first, in field order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        if is_config(tp):
            yield from settings(tp, path + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        yield Setting(
            path,
            tp,
            default,
            f.metadata.get("help", ""),
            f.metadata.get("range"),
            tuple(f.metadata.get("aliases", ())),
        )


def sections(cls: type) -> list[str]:
    """The names of a configuration's nested sections (``optimizer``, ``schedule``, ...)."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if is_config(hints[f.name])]


def _legacy_names(cls: type, prefix: str = "") -> dict[str, str]:
    out = {k: v for k, v in getattr(cls, "LEGACY_NAMES", {}).items()}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if is_config(hints[f.name]):
            out.update(_legacy_names(hints[f.name], f"{prefix}{f.name}."))
    return out


def resolver(cls: type) -> dict[str, str]:
    """Every accepted spelling -> its dotted path: dotted paths, unique leaf names, legacy names."""
    leaves = list(settings(cls))
    names: dict[str, list[str]] = {}
    for s in leaves:
        names.setdefault(s.name, []).append(s.path)
    table = {s.path: s.path for s in leaves}
    table.update({name: paths[0] for name, paths in names.items() if len(paths) == 1})
    table.update(_legacy_names(cls))
    return table


def _unknown(key: str, table: Mapping[str, str], where: str, label: str) -> RomaError:
    near = difflib.get_close_matches(key, list(table), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return RomaError(f"{where}unknown {label} {key!r}{hint}")


def check_value(setting: Setting, value: Any, where: str = "", name: str | None = None) -> Any:
    """``value`` converted to the setting's type, or a ``RomaError`` naming the setting, value and rule.

    Strings are accepted where a number or boolean is expected (``key=value`` overrides and YAML 1.1,
    which reads ``7e-5`` as a string); non-finite numbers are refused unless the range allows them.
    """
    label = name or setting.path
    prefix = f"{where}setting {label!r}"
    literal_none = setting.choices is not None and isinstance(value, str) and value.strip() in setting.choices
    if value is None or (
        not literal_none and isinstance(value, str) and value.strip().lower() in ("none", "null", "~")
    ):
        if setting.optional:
            return None
        raise RomaError(f"{prefix} must be {setting.type_name()}, got none")
    base = _strip_optional(setting.type)
    choices = setting.choices
    text = value.strip() if isinstance(value, str) else None
    try:
        if get_origin(base) is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not items:
                raise ValueError
            element = Setting(setting.path, get_args(base)[0], None, "", setting.range, ())
            return tuple(check_value(element, item, where) for item in items)
        if choices:
            out = value if value in choices else text
            if out not in choices:
                raise ValueError
        elif base is bool:
            if isinstance(value, bool):
                out = value
            elif text is not None and text.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                out = text.lower() in ("true", "yes", "1", "on")
            else:
                raise ValueError
        elif base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            out = value if isinstance(value, int) else int(text)  # type: ignore[arg-type]
        elif base is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value) if isinstance(value, (int, float)) else float(text)  # type: ignore[arg-type]
        elif base is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            out = str(value)
        else:  # pragma: no cover - a configuration declared a type this loader does not know
            raise RomaError(f"{prefix}: unsupported type {base}")
    except (ValueError, TypeError):
        if choices:
            raise RomaError(f"{prefix} got {value!r}: {label} must be {setting.type_name()}") from None
        raise RomaError(f"{prefix} must be {setting.type_name()}, got {value!r}") from None
    if (
        isinstance(out, float)
        and not math.isfinite(out)
        and not (setting.range and setting.range[1] == math.inf)
    ):
        raise RomaError(f"{prefix} must be a finite number, got {value!r}")
    if setting.range is not None and isinstance(out, (int, float)) and not isinstance(out, bool):
        lo, hi = setting.range
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise RomaError(f"{prefix} must lie in {span}, got {value!r}")
    return out


def _flatten(mapping: Mapping[str, Any], cls: type, prefix: str, out: dict[str, Any], where: str) -> None:
    """Nested YAML sections -> dotted keys; a mapping under a section name is that section."""
    secs = set(sections(cls)) if cls is not None else set()
    hints = typing.get_type_hints(cls) if cls is not None else {}
    for key, value in mapping.items():
        key = str(key).strip().replace("-", "_")
        if key in secs and isinstance(value, Mapping):
            _flatten(value, hints[key], f"{prefix}{key}.", out, where)
        else:
            out[f"{prefix}{key}"] = value


def parse_overrides(items: Sequence[str], where: str = "") -> dict[str, Any]:
    """``["lr=3e-3", "graph.k=5"]`` -> ``{"lr": "3e-3", "graph.k": "5"}`` (values typed later)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise RomaError(f"{where}override {item!r} is not key=value")
        key, text = item.split("=", 1)
        out[key.strip().replace("-", "_")] = text
    return out


def build_config(
    cls: type,
    values: Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    where: str = "",
    base: Any = None,
    label: str = "setting",
) -> Any:
    """A validated instance of ``cls``: ``base`` (or the defaults) <- ``values`` <- ``overrides``.

    ``values`` may be nested (YAML sections) or flat (dotted paths, unique leaf names, legacy
    names); ``overrides`` are ``key=value`` strings or a mapping. ``where`` prefixes error messages
    (a file name). Whatever is refused is refused with one sentence naming the setting.
    """
    table = resolver(cls)
    leaves = {s.path: s for s in settings(cls)}
    chosen: dict[str, Any] = {}
    layers: list[Mapping[str, Any]] = []
    if values:
        flat: dict[str, Any] = {}
        _flatten(values, cls, "", flat, where)
        layers.append(flat)
    if overrides:
        layers.append(
            dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides, where)
        )
    for layer in layers:
        for key, value in layer.items():
            path = table.get(key)
            if path is None:
                raise _unknown(key, table, where, label)
            chosen[path] = check_value(leaves[path], value, where, name=key)
    current = to_dict(base) if base is not None else None
    return _instantiate(cls, "", chosen, current)


def _instantiate(cls: type, prefix: str, chosen: Mapping[str, Any], current: Mapping[str, Any] | None) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if is_config(hints[f.name]):
            kwargs[f.name] = _instantiate(
                hints[f.name], path + ".", chosen, None if current is None else current.get(f.name)
            )
        elif path in chosen:
            kwargs[f.name] = chosen[path]
        elif current is not None and f.name in current:
            kwargs[f.name] = current[f.name]
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def validate_config(obj: Any, where: str = "") -> Any:
    """Check every leaf of an existing configuration object (built in Python) the loader's way."""
    cls = type(obj)
    values = {s.path: _get(obj, s.path) for s in settings(cls)}
    return build_config(cls, values, where=where)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A configuration as a nested plain dict (JSON- and YAML-ready)."""
    return dataclasses.asdict(obj)


def to_flat_dict(obj: Any) -> dict[str, Any]:
    """A configuration as ``{dotted path: value}``."""
    return {s.path: _get(obj, s.path) for s in settings(type(obj))}


def to_settings(obj: Any) -> dict[str, Any]:
    """A configuration in its shortest accepted spelling: ``{"lr": 0.003, "regularizer": "none", ...}``.

    Each setting is keyed by its unique leaf name, or its legacy flat name where the leaf is a bare
    ``name``, else its dotted path; ``build_config(type(obj), to_settings(obj))`` gives ``obj`` back.
    """
    cls = type(obj)
    table = resolver(cls)
    legacy = {path: old for old, path in _legacy_names(cls).items()}
    out = {}
    for s in settings(cls):
        if s.name == "name" and s.path in legacy:
            key = legacy[s.path]
        elif table.get(s.name) == s.path:
            key = s.name
        else:
            key = s.path
        out[key] = _get(obj, s.path)
    return out


def load_config(
    cls: type,
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    explicit: Mapping[str, Any] | None = None,
    what: str = "config file",
    recorded: Mapping[str, Any] | None = None,
) -> Any:
    """Defaults <- ``recorded`` (what an input file says, e.g. a routing file's scoring) <- YAML file <-
    explicit values (e.g. command-line flags) <- ``key=value`` overrides."""
    values: dict[str, Any] = {k: v for k, v in (recorded or {}).items() if v is not None}
    if path is not None:
        loaded = load_yaml_mapping(path, what, "a mapping of settings")
        _flatten(loaded, cls, "", values, "")
        # Errors in the file name the file.
        build_config(cls, values, where=f"{path}: ")
    values.update({k: v for k, v in (explicit or {}).items() if v is not None})
    return build_config(cls, values, overrides, where="")


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


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per setting of ``cls`` (its leaf name; the dotted path where the leaf is not
    unique), grouped by section, with the field's help, type and default. Values arrive as strings
    in ``args.<dest>`` and are typed by ``build_config``; unset flags stay ``None``."""
    table = resolver(cls)
    legacy = _legacy_names(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in settings(cls):
        if s.path in skip or s.name in skip:
            continue
        # The unique leaf name (``--lr``) and old flat names (``--regularizer`` for ``regularizer.name``),
        # else the dotted path (``--optimizer.lr``); plus the field's declared aliases.
        names = [old for old, path in legacy.items() if path == s.path]
        if table.get(s.name) == s.path and s.name != "name":  # a bare --name would say nothing
            names.insert(0, s.name)
        if not names:
            names.append(s.path)
        section = s.path.rsplit(".", 1)[0] if "." in s.path else ""
        target = parser
        if section:
            if section not in groups:
                groups[section] = parser.add_argument_group(f"{section} settings")
            target = groups[section]
        flags = [f"--{n.replace('_', '-')}" for n in names] + [f"--{a}" for a in s.aliases]
        meta = "|".join(map(str, s.choices)) if s.choices else s.name.upper().split(".")[-1]
        help_text = f"{s.help} (default: {_show(s.default)})" if s.help else f"default: {_show(s.default)}"
        target.add_argument(*flags, dest=config_dest(s.path), default=None, metavar=meta, help=help_text)


def config_dest(path: str) -> str:
    return "cfg__" + path.replace(".", "__")


def config_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags a user set, as ``{dotted path: text}`` for ``build_config``."""
    out = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            out[key[5:].replace("__", ".")] = value
    return out


def dump_yaml(obj: Any) -> str:
    """A configuration as YAML, sections as nested mappings."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
