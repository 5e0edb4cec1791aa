"""``roma apply`` and ``roma export``: use a router checkpoint with its base model."""

from __future__ import annotations

import argparse

from moe_roma.commands import add_overwrite_option, add_trust_remote_code_option


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "apply",
        help="check a router checkpoint against a base model and show what it changes",
        description="Load the tuned routers into the base model (refusing a mismatched base) and report how "
        "far each tuned router moved from the base.",
    )
    a.add_argument("--model", required=True)
    a.add_argument("--routers", required=True, help="router checkpoint folder from `roma train`")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    add_trust_remote_code_option(a)
    a.set_defaults(func=run_apply)
    e = sub.add_parser(
        "export",
        help="write a full Hugging Face model folder with the tuned routers merged in",
        description="The result loads with AutoModelForCausalLM.from_pretrained(OUT) and no project code.",
    )
    e.add_argument("--model", required=True)
    e.add_argument("--routers", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    add_overwrite_option(e, "a merged model in --out")
    add_trust_remote_code_option(e)
    e.add_argument(
        "--eval-json",
        nargs="+",
        default=[],
        metavar="FILE",
        help="`roma eval --json` reports of these routers: their figures go into the model card's "
        "model-index and its generalisation and failure-mode sections",
    )
    e.set_defaults(func=run_export)
    c = sub.add_parser(
        "card",
        help="write (again) the model card README.md of a router folder, e.g. with evaluation results",
        description="Write DIR/README.md through huggingface_hub's ModelCard: the training configuration "
        "and seed, and the expected generalisation behaviour, failure modes and intended domains, with "
        "--eval-json's figures.",
    )
    c.add_argument("--routers", required=True, help="router folder from `roma train` or `roma import-public`")
    c.add_argument("--eval-json", nargs="+", default=[], metavar="FILE", help="`roma eval --json` reports")
    c.set_defaults(func=run_card)


def run_apply(args: argparse.Namespace) -> int:
    import json

    from moe_roma.models.checkpoint import apply_router_checkpoint, router_snapshot
    from moe_roma.models.loading import load_model

    model, _ = load_model(args.model, dtype="float32", device="cpu", trust_remote_code=args.trust_remote_code)
    base = router_snapshot(model)
    config = apply_router_checkpoint(model, args.routers)
    params = dict(model.named_parameters())
    moved = {
        name: {
            "relative_change": float((params[name] - base[name]).norm() / base[name].norm().clamp_min(1e-12)),
            "shape": list(params[name].shape),
        }
        for name in config["parameter_names"]
    }
    n_tuned = sum(params[n].numel() for n in moved)
    total = sum(p.numel() for p in params.values())
    report = {
        "routers": str(args.routers),
        "model": str(args.model),
        "method": config.get("method"),
        "tuned_layers": config["tuned_layers"],
        "tuned_parameters": n_tuned,
        "total_parameters": total,
        "tuned_share": n_tuned / total,
        "changes": moved,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{args.routers}: {config.get('method')} routers for layers {config['tuned_layers']} apply to "
            f"{args.model}"
        )
        print(f"tuned parameters: {n_tuned} of {total} ({n_tuned / total:.4%})")
        for name, m in moved.items():
            print(f"  {name}: moved {m['relative_change']:.3%} from the base")
    return 0


def read_eval_reports(
    paths: list[str], routers: str | None = None, fingerprint: str | None = None
) -> list[dict]:
    """``roma eval --json`` reports, each checked to be one (a JSON object with an accuracy), to hold only
    finite figures (accuracies between 0 and 1), and, with ``fingerprint``, to be an evaluation of the
    routers whose weights have that SHA-256 (``routers_sha256``), not of the base model or of others."""
    import json

    from moe_roma.io.errors import DataError

    def no_constant(name: str) -> float:
        raise ValueError(f"it holds {name}, not a number; a card shows only finite figures")

    reports = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                report = json.load(fh, parse_constant=no_constant)
        except FileNotFoundError:
            raise DataError(path, None, "no such file") from None
        except (OSError, ValueError) as exc:
            raise DataError(path, None, f"is not a usable JSON report ({str(exc).splitlines()[0]})") from None
        if not isinstance(report, dict) or "acc" not in report or "data" not in report:
            raise DataError(path, None, "is not a `roma eval --json` report (no 'acc' and 'data')")
        for name, value in _figures(report):
            if not _is_accuracy(value) or (name == "acc" and value is None):
                problem = f"is {value!r}, not an accuracy between 0 and 1; a card shows only true figures"
                raise DataError(path, f"'{name}'", problem)
        if fingerprint is not None:
            _check_routers(path, report, routers, fingerprint)
        reports.append(report)
    return reports


def _figures(report: dict) -> list[tuple[str, object]]:
    """The accuracies of an eval report that a card shows."""
    base = report.get("base") or {}
    out = [("acc", report.get("acc")), ("acc_norm", report.get("acc_norm"))]
    out += [(f"base {k}", base.get(k)) for k in ("acc", "acc_norm")]
    return out + [(f"task {t} acc", (v or {}).get("acc")) for t, v in (report.get("tasks") or {}).items()]


def _is_accuracy(value: object) -> bool:
    import math

    if value is None:
        return True
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _check_routers(path: str, report: dict, routers: str | None, fingerprint: str) -> None:
    """Refuse an eval report of the base model, or of routers other than those with this weights SHA-256."""
    from moe_roma.io.errors import DataError

    theirs = report.get("routers_sha256")
    if theirs is None:
        base = report.get("evaluated") == "base" or not report.get("routers")
        what = "the base model" if base else "routers it does not fingerprint (written by an older roma eval)"
        raise DataError(
            path,
            None,
            f"is an evaluation of {what}, not of the routers in {routers}; evaluate them with roma eval "
            f"--routers {routers} --json",
        )
    if theirs != fingerprint:
        raise DataError(
            path,
            None,
            f"evaluated other routers (weights SHA-256 {str(theirs)[:12]}...) than those in {routers} "
            f"({fingerprint[:12]}...); a card shows only its own routers' figures",
        )


def _card_inputs(routers: str, eval_json: list[str]) -> tuple[dict, list[dict], list[str]]:
    """The router config, the evaluation reports and the collapse seen in training (for the model card)."""
    import json
    from pathlib import Path

    from moe_roma.models.checkpoint import load_router_checkpoint, routers_fingerprint
    from moe_roma.training.monitor import collapse_events
    from moe_roma.training.run_folder import METRICS_NAME

    config, _ = load_router_checkpoint(routers)
    reports = read_eval_reports(eval_json, routers, routers_fingerprint(routers, config))
    metrics = Path(routers) / METRICS_NAME
    records = (
        [json.loads(x) for x in metrics.read_text(encoding="utf-8").splitlines() if x.strip()]
        if (metrics.is_file())
        else []
    )
    return config, reports, collapse_events(records, int(config["num_experts"]))


def run_export(args: argparse.Namespace) -> int:
    from moe_roma.io.outputs import guard_output
    from moe_roma.io.paths import local_path
    from moe_roma.models.card import build_model_card
    from moe_roma.models.checkpoint import MERGED_MODEL, export_merged_model
    from moe_roma.models.loading import load_model

    inputs = {"--model": local_path(args.model), "--routers": args.routers, "--eval-json": args.eval_json}
    output = guard_output("--out", args.out, MERGED_MODEL, inputs=inputs, overwrite=args.overwrite)
    config, reports, collapse = _card_inputs(
        args.routers, args.eval_json
    )  # bad inputs stop before the model loads
    card = build_model_card(config, reports, collapse, kind="merged")
    model, tokenizer = load_model(
        args.model, dtype=args.dtype, device="cpu", trust_remote_code=args.trust_remote_code
    )
    out = export_merged_model(model, tokenizer, args.routers, output, card=str(card))
    print(
        f"wrote {out} with its model card README.md: loads with AutoModelForCausalLM.from_pretrained('{out}')"
    )
    return 0


def run_card(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_roma.io.outputs import guard_output
    from moe_roma.models.card import CARD_NAME, build_model_card, write_model_card

    # Rewriting the card is what `roma card` is for: the README.md of the router folder is replaced.
    guard_output(
        "--routers", Path(args.routers) / CARD_NAME, inputs={"--eval-json": args.eval_json}, overwrite=True
    )
    config, reports, collapse = _card_inputs(args.routers, args.eval_json)
    path = write_model_card(build_model_card(config, reports, collapse, kind="routers"), args.routers)
    print(f"wrote {path}")
    return 0
