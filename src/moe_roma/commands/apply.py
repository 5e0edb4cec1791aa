"""``roma apply`` and ``roma export``: use a router checkpoint with its base model."""

from __future__ import annotations

import argparse


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
    e.set_defaults(func=run_export)


def run_apply(args: argparse.Namespace) -> int:
    import json

    from moe_roma.models.checkpoint import apply_router_checkpoint, router_snapshot
    from moe_roma.models.loading import load_model

    model, _ = load_model(args.model, dtype="float32", device="cpu")
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
        "routers": str(args.routers), "model": str(args.model), "method": config.get("method"),
        "tuned_layers": config["tuned_layers"], "tuned_parameters": n_tuned, "total_parameters": total,
        "tuned_share": n_tuned / total, "changes": moved,
    }  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.routers}: {config.get('method')} routers for layers {config['tuned_layers']} apply to {args.model}")
        print(f"tuned parameters: {n_tuned} of {total} ({n_tuned / total:.4%})")
        for name, m in moved.items():
            print(f"  {name}: moved {m['relative_change']:.3%} from the base")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from moe_roma.io.paths import guard_outputs, local_path
    from moe_roma.models.checkpoint import export_merged_model
    from moe_roma.models.loading import load_model

    guard_outputs({"--model": local_path(args.model), "--routers": args.routers}, {"--out": args.out})

    model, tokenizer = load_model(args.model, dtype=args.dtype, device="cpu")
    out = export_merged_model(model, tokenizer, args.routers, args.out)
    print(f"wrote {out}: loads with AutoModelForCausalLM.from_pretrained('{out}')")
    return 0
