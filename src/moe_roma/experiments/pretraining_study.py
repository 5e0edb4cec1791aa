"""``roma experiment`` files of ``kind: architectures``: the pre-training study's grid.

Every architecture x alignment setting x seed is one downstream testbed build
(``testbed.build.build_downstream_testbed``, the same code as ``roma testbed build --testbed
downstream --arch A ...``) at the file's shared budget, scored on the evaluation splits. Outputs:
``results.json`` (every run's figures), ``table.md`` (mean ± sd over seeds, CTGI, routing entropy and
utilisation, total and active parameters; tokens/s per architecture), ``accuracy.png``; and per run
``runs/<arch>/<setting>/seed<S>/`` with the model folder (its ``build_info.json``, ``metrics.jsonl``
and model card ``README.md``) and ``result.json`` (a finished run is kept on ``--resume``).

    name: architectures
    kind: architectures
    seeds: [0, 1]
    workers: 2                                  # builds at once, one thread each
    build: {steps: 700, metrics_every: 50}      # DownstreamBuildConfig fields shared by every run
    architectures: [dense, switch, topk, fine, nested]
    settings:                                   # name + DownstreamBuildConfig fields
      - {name: none}
      - {name: fixed, align: prior-kl, align_schedule: fixed}
    splits: [in_dist, shifted, heldout_tasks]

A setting that needs routers (alignment or a router-stability option) is skipped for ``dense``.
CTGI compares a setting with the same architecture's ``reference`` setting (default ``none``): its
gain on ``heldout_tasks`` over its gain on ``in_dist`` (None when the in_dist gain is not positive).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from moe_roma import __version__
from moe_roma.io.atomic import write_json_atomic, write_text_atomic
from moe_roma.io.errors import RomaError
from moe_roma.io.outputs import safe_name
from moe_roma.models.card import write_model_card

KEYS = {
    "name",
    "kind",
    "seeds",
    "workers",
    "build",
    "architectures",
    "settings",
    "splits",
    "limit",
    "reference",
}
_ROUTER_FIELDS = (
    "align",
    "router_init_std",
    "router_lr_mult",
    "router_clip",
    "router_jitter",
    "router_z_loss",
)


@dataclasses.dataclass(frozen=True)
class Job:
    arch: str
    setting: str
    seed: int
    config: dict  # every DownstreamBuildConfig field
    out: str

    @property
    def key(self) -> str:
        return f"{self.arch}/{self.setting}/seed{self.seed}"


def _needs_routers(values: dict) -> bool:
    defaults = {f.name: f.default for f in dataclasses.fields(_config_class())}
    return any(k in values and values[k] != defaults[k] for k in _ROUTER_FIELDS)


def _config_class():
    from moe_roma.testbed.config import DownstreamBuildConfig

    return DownstreamBuildConfig


def _build_config(values: dict, where: str):
    """A checked ``DownstreamBuildConfig``; an unknown field or bad option is one sentence."""
    return _config_class().from_dict(values, f"{where}: ", what="build setting")


def plan_jobs(cfg: dict, where: str, out: Path) -> tuple[list[Job], list[str]]:
    """Every build of the grid, in order, and the splits; checks the whole file first."""
    from moe_roma.testbed.config import ARCHITECTURES
    from moe_roma.testbed.downstream import EVAL_SPLITS, SPLITS

    unknown = sorted(set(cfg) - KEYS)
    if unknown:
        raise RomaError(
            f"{where}: unknown keys {unknown} for kind: architectures (known: {', '.join(sorted(KEYS))})"
        )
    archs = cfg.get("architectures") or []
    bad = [a for a in archs if a not in ARCHITECTURES]
    if not archs or bad:
        raise RomaError(
            f"{where}: 'architectures' must list some of {', '.join(ARCHITECTURES)}, got {archs!r}"
        )
    settings = cfg.get("settings") or [{"name": "none"}]
    if not isinstance(settings, list) or not all(isinstance(s, dict) and "name" in s for s in settings):
        raise RomaError(f"{where}: 'settings' must be a list of mappings with a 'name'")
    # A setting's name is a folder of the results (runs/<arch>/<name>): it must stay inside it.
    names = [safe_name(s["name"], where, "setting name") for s in settings]
    if len(set(names)) != len(names):
        raise RomaError(f"{where}: setting names must be unique, got {names}")
    splits = list(cfg.get("splits") or EVAL_SPLITS)
    if any(s not in SPLITS for s in splits):
        raise RomaError(f"{where}: 'splits' must be downstream splits ({', '.join(SPLITS)}), got {splits}")
    seeds = cfg.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise RomaError(f"{where}: 'seeds' must be a list of integers")
    shared = dict(cfg.get("build") or {})
    for key in ("arch", "seed"):
        if key in shared:
            raise RomaError(f"{where}: 'build' may not set {key!r}: the grid sets it per run")
    jobs = []
    for arch in archs:
        for s in settings:
            values = {k: v for k, v in s.items() if k != "name"}
            if arch == "dense" and _needs_routers(values):
                continue  # alignment and router stability need routers
            for seed in seeds:
                bc = _build_config(
                    {**shared, **values, "arch": arch, "seed": seed},
                    f"{where}: setting {s['name']} of {arch}",
                )
                jobs.append(
                    Job(
                        arch,
                        str(s["name"]),
                        seed,
                        dataclasses.asdict(bc),
                        str(out / "runs" / arch / str(s["name"]) / f"seed{seed}"),
                    )
                )
    return jobs, splits


def job_inputs(job: Job, splits: list[str], limit: int) -> dict:
    """What a build's result depends on (as JSON reads it back): ``--resume`` reuses it only for these."""
    return json.loads(json.dumps({"build_config": job.config, "splits": list(splits), "limit": limit}))


def finished_job(job: Job, splits: list[str], limit: int) -> bool:
    """Whether ``job.out`` holds this job's result: made with the same build settings, splits and limit
    (a result from before they were recorded is matched on its model's build_info.json)."""
    try:
        result = json.loads((Path(job.out) / "result.json").read_text(encoding="utf-8"))
        if "inputs" in result:
            return result["inputs"] == job_inputs(job, splits, limit)
        info = json.loads((Path(job.out) / "model" / "build_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = job_inputs(job, splits, limit)
    return info.get("build_config") == wanted["build_config"] and sorted(
        result.get("accuracy", {})
    ) == sorted(splits)


def run_job(job: Job, splits: list[str], limit: int) -> str:
    """One build and its scores, into ``job.out`` (a worker process runs it; the result is a JSON file)."""
    from moe_roma.testbed.build import build_downstream_testbed

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _config_class()(**job.config)
    lines: list[str] = []
    t0 = time.time()
    info, _, _ = build_downstream_testbed(
        out / "model", cfg, log=lines.append, oracle=False, splits=splits, limit=limit
    )
    records = (
        [json.loads(x) for x in (out / "model" / "metrics.jsonl").read_text().splitlines()]
        if (out / "model" / "metrics.jsonl").is_file()
        else []
    )
    last = next((r for r in reversed(records) if "entropy" in r), None)
    result = {
        "arch": job.arch,
        "setting": job.setting,
        "seed": job.seed,
        "architecture": info.get("architecture"),
        "accuracy": {s: info["accuracy"][s]["all"] for s in splits},
        "n": {s: info["scored_sizes"][s] for s in splits},
        "choice_xent": {s: info["choice_xent"][s] for s in splits},
        "answer_nll": {s: info["answer_nll"][s] for s in splits},
        "loss": records[-1]["loss"] if records else None,  # dense runs log loss without routing health
        "parameters": info["parameters"],
        "active_parameters": info.get("active_parameters"),
        "tokens": info.get("pretrain_tokens_seen"),
        "tokens_per_second": info.get("tokens_per_second"),
        "train_seconds": info["train_seconds"],
        "seconds": round(time.time() - t0, 1),
        "entropy": statistics.fmean(last["entropy"].values()) if last else None,
        "utilisation_max": statistics.fmean(u["max"] for u in last["utilisation"].values()) if last else None,
        "utilisation_min": statistics.fmean(u["min"] for u in last["utilisation"].values()) if last else None,
        "collapse_warnings": info.get("collapse_warnings", []),
        "inputs": job_inputs(job, splits, limit),
    }
    write_model_card(model_card(info, result, splits), out / "model")
    write_text_atomic(out / "build.log", "\n".join(lines) + "\n")
    write_json_atomic(out / "result.json", result)
    return job.key


def model_card(info: dict, result: dict, splits: list[str]):
    """The ``huggingface_hub.ModelCard`` of one built model: its training configuration, expected
    generalisation behaviour, failure modes and intended domains."""
    from huggingface_hub import ModelCard, ModelCardData

    cfg = info["build_config"]
    data = ModelCardData(
        library_name="transformers",
        tags=["moe-roma", "testbed", "pretraining", result["arch"]],
        model_name=f"moe-roma downstream testbed, {result['arch']}, {result['setting']}",
    )
    warnings = [f"- step {w['step']}: {w['warning']}" for w in result["collapse_warnings"]]
    text = [
        f"# moe-roma downstream testbed: `{result['arch']}` ({info.get('architecture')}), setting "
        f"`{result['setting']}`",
        "",
        f"Pre-trained from scratch by `roma experiment` (kind: architectures) with moe-roma {__version__}: "
        f"{info['parameters']:,} parameters, {info.get('active_parameters'):,} active per token, "
        f"{cfg['steps']} steps of {cfg['batch_size']} documents ({info.get('pretrain_tokens_seen'):,} "
        f"tokens), seed {cfg['seed']}. It loads with `AutoModelForCausalLM.from_pretrained`.",
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(cfg, indent=2, sort_keys=True),
        "```",
        "",
        "## Expected generalisation behaviour",
        "",
        *[
            f"- {s}: {100 * result['accuracy'][s]:.1f}% of {result['n'][s]} items (continuation scoring; "
            "chance 25%)"
            for s in splits
        ],
        "",
        "## Failure modes",
        "",
        *(warnings or ["- no routing collapse was logged during pre-training"]),
        "- a research model of a few million parameters over a word-level vocabulary of the testbed's "
        "lexicon: it knows nothing beyond it",
        "",
        "## Intended domains",
        "",
        "The downstream testbed's task suite (docs/testbed.md): comparing architectures and routing "
        "alignment during pre-training (docs/pretraining-study.md). Not for any real use.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(text) + "\n")


def run_pretraining_study(cfg: dict, config_path: str, out: Path, log=print, resume: bool = False) -> dict:
    """Run (or, with ``resume``, finish) the grid of an experiment file of ``kind: architectures``."""
    start = time.perf_counter()
    jobs, splits = plan_jobs(cfg, config_path, out)
    limit = int(cfg.get("limit") or 0)
    workers = int(cfg.get("workers", 1))
    todo = [j for j in jobs if not (resume and finished_job(j, splits, limit))]
    log(
        f"experiment {cfg.get('name', '')}: {len(jobs)} builds ({len(jobs) - len(todo)} already done), "
        f"{workers} at a time"
    )
    if todo:
        # Separate processes, so that builds run side by side; each writes its result as JSON.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_job, j, splits, limit) for j in todo]
            for f in futures:
                log(f"done {f.result()}")
    # The expert count comes from the job's config (not the result file), so that tables of runs written
    # before it was recorded can normalise entropy too.
    results = [
        {**json.loads((Path(j.out) / "result.json").read_text()), "experts": _experts(j)} for j in jobs
    ]
    seconds = time.perf_counter() - start
    from moe_roma.report.pretraining_study import pretraining_study_report, rows_of

    summary = summarise(results, splits, str(cfg.get("reference", "none")))
    doc = {
        "config": cfg,
        "splits": splits,
        "runs": results,
        "summary": summary,
        "package_version": __version__,
        "seconds": round(seconds, 1),
    }
    write_json_atomic(out / "results.json", doc)
    write_text_atomic(out / "table.md", pretraining_study_report(cfg, summary, splits, seconds, config_path))
    from moe_roma.report.experiments import plot_accuracy

    methods = list(dict.fromkeys(f"{r['arch']}/{r['setting']}" for r in results))
    plot_accuracy(rows_of(results, splits), methods, splits, out / "accuracy.png")
    from moe_roma.report.pretraining_study import plot_curves

    plot_curves(training_curves(jobs), out / "curves.png")
    log(
        f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'accuracy.png'}, {out / 'curves.png'} "
        f"in {seconds:.0f} s"
    )
    return doc


def training_curves(jobs: list[Job]) -> dict[tuple[str, str], list[list[dict]]]:
    """Each run's ``metrics.jsonl`` records, grouped by architecture and setting, each record with its
    mean routing entropy over log E (``entropy_norm``; None for dense), so that expert counts compare."""
    curves: dict[tuple[str, str], list[list[dict]]] = {}
    for job in jobs:
        path = Path(job.out) / "model" / "metrics.jsonl"
        if not path.is_file():
            continue
        experts = _experts(job)
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        for r in records:
            layers = r.get("entropy")
            r["entropy_norm"] = normalised_entropy(
                statistics.fmean(layers.values()) if layers else None, experts
            )
        curves.setdefault((job.arch, job.setting), []).append(records)
    return curves


def _experts(job: Job) -> int:
    """Routed experts per MoE layer of the job's architecture (0 for dense)."""
    from moe_roma.testbed.model_shapes import shape_of

    return shape_of(_config_class()(**job.config)).num_experts


def normalised_entropy(entropy: float | None, experts: int) -> float | None:
    """Routing entropy over log E: 1 is uniform routing, whatever the expert count (None without routers)."""
    if entropy is None or experts < 2:
        return None
    return entropy / math.log(experts)


def _normalised_entropy(run: dict) -> float | None:
    return normalised_entropy(run.get("entropy"), run.get("experts", 0))


# The ablation's figures: (name, how to read it from a run); each is compared with the reference setting.
def _ablation_metrics(splits: list[str]) -> list[tuple[str, object]]:
    out = [(f"accuracy:{s}", lambda r, s=s: r["accuracy"][s]) for s in splits]
    out += [(f"choice_xent:{s}", lambda r, s=s: r.get("choice_xent", {}).get(s)) for s in splits]
    out += [
        ("entropy_norm", _normalised_entropy),
        ("utilisation_max", lambda r: r.get("utilisation_max")),
        ("loss", lambda r: r.get("loss")),
    ]
    return out


def paired_deltas(runs: list[dict], ref_runs: list[dict], splits: list[str]) -> dict[str, dict]:
    """Per figure: the setting minus the reference at the same seed, each seed's and their mean."""
    ref_by_seed = {r["seed"]: r for r in ref_runs}
    deltas: dict[str, dict] = {}
    for name, read in _ablation_metrics(splits):
        pairs = [(r["seed"], read(r), read(ref_by_seed[r["seed"]])) for r in runs if r["seed"] in ref_by_seed]
        values = {seed: a - b for seed, a, b in pairs if a is not None and b is not None}
        deltas[name] = {"mean": statistics.fmean(values.values()) if values else None, "by_seed": values}
    return deltas


def _mean_sd(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "values": []}
    return {
        "mean": statistics.fmean(vals),
        "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "values": vals,
    }


def summarise(results: list[dict], splits: list[str], reference: str = "none") -> list[dict]:
    """One row per architecture and setting: accuracy per split (mean, sd over seeds), CTGI against the
    architecture's ``reference`` setting, routing entropy and utilisation, parameters, tokens/s."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["arch"], r["setting"]), []).append(r)
    rows = []
    for (arch, setting), runs in groups.items():
        ref_runs = groups.get((arch, reference), [])
        rows.append(
            {
                "arch": arch,
                "setting": setting,
                "seeds": [r["seed"] for r in runs],
                "accuracy": {s: _mean_sd([r["accuracy"][s] for r in runs]) for s in splits},
                # Runs from before these scores existed have none: the cell is then "-".
                "choice_xent": {s: _mean_sd([r.get("choice_xent", {}).get(s) for r in runs]) for s in splits},
                "answer_nll": {s: _mean_sd([r.get("answer_nll", {}).get(s) for r in runs]) for s in splits},
                "loss": _mean_sd([r.get("loss") for r in runs]),
                "entropy": _mean_sd([r["entropy"] for r in runs])["mean"],
                "entropy_norm": _mean_sd([_normalised_entropy(r) for r in runs])["mean"],
                "utilisation_max": _mean_sd([r["utilisation_max"] for r in runs])["mean"],
                "utilisation_min": _mean_sd([r["utilisation_min"] for r in runs])["mean"],
                "parameters": runs[0]["parameters"],
                "active_parameters": runs[0]["active_parameters"],
                "tokens": runs[0]["tokens"],
                "tokens_per_second": _mean_sd([r["tokens_per_second"] for r in runs])["mean"],
                "collapse_warnings": sum(len(r["collapse_warnings"]) for r in runs),
                "delta": paired_deltas(runs, ref_runs, splits) if setting != reference and ref_runs else None,
            }
        )
    by = {(r["arch"], r["setting"]): r for r in rows}
    for row in rows:
        ref = by.get((row["arch"], reference))
        row["ctgi"] = None
        if ref is None or row is ref or "in_dist" not in splits or "heldout_tasks" not in splits:
            continue
        gain_in = row["accuracy"]["in_dist"]["mean"] - ref["accuracy"]["in_dist"]["mean"]
        gain_out = row["accuracy"]["heldout_tasks"]["mean"] - ref["accuracy"]["heldout_tasks"]["mean"]
        row["gain_in_dist"], row["gain_heldout"] = gain_in, gain_out
        row["ctgi"] = gain_out / gain_in if gain_in > 0 else None
    return rows
