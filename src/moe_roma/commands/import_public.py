"""``roma import-public``: bring a ``router_ft.pt`` of the method's public code into our router format."""

from __future__ import annotations

import argparse

from moe_roma.commands import add_overwrite_option, add_trust_remote_code_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-public",
        help="convert the public RoMA code's router_ft.pt into a router folder",
        description="Read a router_ft.pt written by the method's public code with "
        "torch.load(weights_only=True) only (a file that needs code unpickled is refused without running "
        "it), check its gate tensors' layers and shapes against --model, and write a router folder that "
        "`roma eval --routers`, `roma apply` and `roma export` read.",
    )
    p.add_argument("--checkpoint", required=True, help="the public code's router_ft.pt")
    p.add_argument(
        "--model", required=True, help="the base model it was trained from: Hugging Face id or folder"
    )
    p.add_argument("--out", required=True, help="router folder to write")
    add_overwrite_option(p, "a router folder in --out")
    add_trust_remote_code_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_roma.io.errors import warn
    from moe_roma.io.outputs import guard_output
    from moe_roma.io.paths import local_path
    from moe_roma.models.card import build_model_card, write_model_card
    from moe_roma.models.checkpoint import ROUTER_FOLDER, load_router_checkpoint
    from moe_roma.models.loading import load_model
    from moe_roma.models.public_checkpoint import import_public_checkpoint, read_public_checkpoint

    out = Path(args.out)
    inputs = {"--checkpoint": args.checkpoint, "--model": local_path(args.model)}
    output = guard_output("--out", out, ROUTER_FOLDER, inputs=inputs, overwrite=args.overwrite)
    _, _, recorded = read_public_checkpoint(args.checkpoint)  # a refused file stops before the model loads
    if recorded and recorded.rstrip("/") != str(args.model).rstrip("/"):
        warn(f"{args.checkpoint} was trained from {recorded!r}; importing it for --model {args.model}")
    model, _ = load_model(args.model, dtype="float32", device="cpu", trust_remote_code=args.trust_remote_code)
    with output.staged() as folder:  # the folder lands whole, with its card, or not at all
        _, summary = import_public_checkpoint(model, args.checkpoint, folder)
        config, _ = load_router_checkpoint(folder)
        write_model_card(
            build_model_card(config), folder
        )  # `roma card --eval-json` fills in the results later
    folder = out
    print(
        f"imported {summary['tensors']} router tensors of layers {summary['tuned_layers']} from "
        f"{args.checkpoint}; wrote {folder} and its model card"
    )
    return 0
