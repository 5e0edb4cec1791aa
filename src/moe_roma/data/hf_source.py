"""Hugging Face ``datasets`` as a data source: hub datasets and local parquet, arrow or JSON files.

A source is ``hf:NAME[:CONFIG][:SPLIT]`` (``hf:allenai/ai2_arc:ARC-Challenge:test``,
``hf:allenai/sciq:train``; with two parts the second is a split when it looks like one -
``train``, ``validation``, ``test``, ``dev`` or a slice such as ``train[:1000]`` - and a config
otherwise; ``hf:NAME::SPLIT`` is always a split), or a local ``.parquet`` / ``.arrow`` file, a folder
written by ``Dataset.save_to_disk``, or a JSON/JSONL file that none of the built-in loaders reads.
Everything is read by ``datasets`` itself; rows become the same ``MCExample`` as every other format,
through a preset (by name, else detected from the columns) or a ``FieldMap`` of column names.
A bad row stops the load with one sentence naming the source, the row (0-based, as
``dataset[i]``) and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moe_roma.data.example import MCExample
from moe_roma.data.formats._common import IdRegistry, Where, check_text, make_example, show
from moe_roma.data.presets import FieldMap, Row, detect_preset, get_preset
from moe_roma.io.errors import DataError

PREFIX = "hf:"
SPLIT_NAMES = {"train", "validation", "valid", "val", "test", "dev", "eval"}
FILE_BUILDERS = {
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".csv": "csv",
}


def is_hub_spec(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def is_datasets_source(source: str | Path) -> bool:
    """True for an ``hf:`` spec, a parquet or arrow file, or a ``save_to_disk`` folder (the built-in
    loaders read none of them)."""
    if is_hub_spec(source):
        return True
    path = Path(source)
    if path.is_dir():
        saved = (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
        return saved or (path / "dataset_dict.json").is_file()
    return path.suffix.lower() in (".parquet", ".arrow")


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``hf:NAME[:CONFIG][:SPLIT]`` -> (name, config, split).

    >>> parse_hub_spec("hf:allenai/ai2_arc:ARC-Challenge:test")
    ('allenai/ai2_arc', 'ARC-Challenge', 'test')
    >>> parse_hub_spec("hf:allenai/sciq:train[:100]")
    ('allenai/sciq', None, 'train[:100]')
    >>> parse_hub_spec("hf:aps/super_glue:copa")
    ('aps/super_glue', 'copa', None)
    """
    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    parts = re.split(r":(?![^\[]*\])", body)  # not at the colon of a slice such as train[:100]
    if not parts[0].strip() or len(parts) > 3:
        raise DataError(
            spec, None, "a hub dataset is written hf:NAME[:CONFIG][:SPLIT], e.g. hf:allenai/sciq:train"
        )
    name = parts[0].strip()
    if len(parts) == 1:
        return name, None, None
    if len(parts) == 2:
        second = parts[1].strip()
        looks_like_split = second.split("[")[0] in SPLIT_NAMES or "[" in second
        return (name, None, second or None) if looks_like_split else (name, second or None, None)
    return name, parts[1].strip() or None, parts[2].strip() or None


def _datasets_module():
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency of the package; guards a broken install
        raise DataError(
            None, None, "reading Hugging Face datasets needs the 'datasets' package: pip install datasets"
        ) from None
    return datasets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_uncached(datasets: Any, *args: Any, **kwargs: Any) -> Any:
    """``datasets.load_dataset`` of local files, read into memory through a throw-away cache.

    ``datasets`` keys its cache on a file's path and modification time: a file replaced within the
    same second (or with its time kept) would be read from the old copy. Here every read is of the
    file as it is, and nothing of it is left in the user's cache.
    """
    import tempfile

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar for reading a local file would only bury a one-line error
    try:
        with tempfile.TemporaryDirectory(prefix="roma-datasets-") as cache:
            return datasets.load_dataset(*args, cache_dir=cache, keep_in_memory=True, **kwargs)
    finally:
        if shown:
            datasets.enable_progress_bars()


def open_dataset(source: str | Path) -> Any:
    """The ``datasets.Dataset`` a source names (one split), or a DataError saying why not."""
    datasets = _datasets_module()
    label = str(source)
    try:
        if is_hub_spec(source):
            name, config, split = parse_hub_spec(str(source))
            if Path(name).is_dir():  # a local folder of data files: read as they are now
                loaded = _load_uncached(datasets, name, config, split=split)
            else:
                loaded = datasets.load_dataset(name, config, split=split)
        else:
            path = Path(source)
            if not path.exists():
                raise DataError(path, None, "no such file or folder")
            if path.is_dir():
                loaded = datasets.load_from_disk(str(path))
            else:
                builder = FILE_BUILDERS.get(path.suffix.lower())
                if builder is None:
                    raise DataError(
                        path,
                        None,
                        f"datasets cannot tell how to read a {path.suffix or 'suffix-less'} "
                        "file; use .parquet, .arrow, .json, .jsonl or .csv",
                    )
                loaded = _load_uncached(datasets, builder, data_files=str(path), split="train")
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (hub, offline, schema, split); one sentence each
        hint = ""
        if is_hub_spec(source) and "offline" in str(exc).lower():
            hint = "; HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set and the dataset is not in the local cache"
        raise DataError(
            label, None, f"datasets could not load it ({show(_first_line(exc), 160)[1:-1]}){hint}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if len(splits) != 1:
            if is_hub_spec(source):
                name, config, _ = parse_hub_spec(str(source))
                example = f"hf:{name}:{config or ''}:{splits[0]}"
            else:
                example = str(Path(source) / splits[0])  # save_to_disk writes one folder per split
            raise DataError(label, None, f"has splits {splits}; name one, e.g. {example}")
        loaded = loaded[splits[0]]
    if isinstance(loaded, (datasets.IterableDataset, datasets.IterableDatasetDict)):  # pragma: no cover
        raise DataError(label, None, "is a streaming dataset; load it without streaming")
    return loaded


def choose_converter(
    source: str, columns: list[str], preset: str | None, fields: FieldMap | None
) -> tuple[str, Any]:
    """(name, converter): the fields when given, else the named preset, else the detected one."""
    if fields is not None:
        return "fields", fields
    if preset:
        return get_preset(preset, source).name, get_preset(preset, source)
    found = detect_preset(columns)
    if found is None:
        raise DataError(
            source,
            None,
            f"no preset matches its columns {show(sorted(columns), 120)}; pass --preset "
            "or --question-field, --choices-field and --answer-field",
        )
    return found.name, found


def load_datasets_examples(
    source: str | Path,
    preset: str | None = None,
    fields: FieldMap | None = None,
    task: str | None = None,
) -> list[MCExample]:
    """Every row of ``source`` as a validated ``MCExample`` (see the module docstring)."""
    label = str(source)
    dataset = open_dataset(source)
    name, converter = choose_converter(label, list(dataset.column_names), preset, fields)
    if len(dataset) == 0:
        raise DataError(label, None, "has no rows")
    if isinstance(converter, FieldMap):
        converter = converter.for_rows(dataset)  # one rule for the file's digit-string answers
    default_task = task or (
        Path(label).stem if not is_hub_spec(label) else parse_hub_spec(label)[0].split("/")[-1]
    )
    ids = IdRegistry()
    examples = []
    for i, row in enumerate(dataset):
        where = Where(label, f"row {i}")  # type: ignore[arg-type]
        parsed: Row = converter.convert(row, where)
        check_text(parsed.question, "the question", where)
        for j, choice in enumerate(parsed.choices):
            check_text(choice, f"choice {j + 1}", where)
        example_id = str(parsed.id) if parsed.id not in (None, "") else f"{default_task}-{i}"
        ids.add(example_id, where)
        chosen_task = task or parsed.task or default_task
        examples.append(
            make_example(
                where,
                example_id=example_id,
                question=parsed.question,
                choices=parsed.choices,
                answer=parsed.answer,
                task=chosen_task,
                continuation=parsed.continuation,
                meta={**parsed.meta, "preset": name},
            )
        )
    return examples
