"""``roma train``: RoMA router post-training from a routing file.

Before anything is written: the settings are checked, the routing file is read, ``--out`` is
compared with every input (``--routing`` and its side-car, ``--config``, the model folder), a
folder that holds a finished run (or a resumable state) is refused unless ``--overwrite`` (or
``--resume``) says what to do with it, and ``<out>/.roma.lock`` is taken so that a second run into
the same folder is refused with the holder's PID. SIGINT and SIGTERM stop the run cleanly: without
a saved state it leaves nothing behind; with one (``--runtime.save-every``) it keeps the last complete
state and says how to resume.
"""

from __future__ import annotations

import argparse

from moe_roma.commands import (
    add_distributed_options,
    add_report_to_option,
    add_threads_option,
    add_trust_remote_code_option,
)
from moe_roma.io.config import add_config_flags
from moe_roma.methods.roma.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="post-train the routers with RoMA (or an ablation)",
        description="Train only the routers of the chosen MoE layers with task loss + lambda(t) * "
        "regulariser. Settings: defaults <- --config YAML <- --dotted.name flags <- key=value overrides "
        "(any TrainConfig setting by its dotted name). The prompts are the routing file's (the template "
        "chosen at `roma collect`).",
    )
    p.add_argument("--model", required=True, help="base model: Hugging Face id or local folder")
    p.add_argument(
        "--routing", required=True, help="routing JSON from `roma collect` (carries texts and answers)"
    )
    p.add_argument("--out", required=True, help="output folder for the router checkpoint and metrics")
    p.add_argument("--config", default=None, help="YAML file of training settings (sections or dotted names)")
    p.add_argument("--resume", action="store_true", help="continue from the last state in --out")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train again into an --out that holds a finished run or a state (they are replaced)",
    )
    add_threads_option(p)
    add_trust_remote_code_option(p)
    add_distributed_options(p, shard=True)
    # One flag per training setting, generated from the TrainConfig fields (docs/training.md lists them).
    add_config_flags(p, TrainConfig)
    p.add_argument("--no-progress", action="store_true")
    add_report_to_option(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any training setting by its dotted name, e.g. regularizer.lam_final=0.2 or graph.k=5",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _refuse_contradictions(args)
    store, config = _settings(args)
    out, folder, output = _guard_out(args)
    _warn_if_base_near_chance(store, config)
    trainer, result = _train(args, store, config, out, folder, output)
    if trainer.rank == 0:
        m = result.final_metrics
        print(
            f"trained routers of layers {result.tuned_layers} for {result.steps} steps in "
            f"{result.seconds:.1f} s (task loss {_num(m.get('task_loss'))}, manifold loss "
            f"{_num(m.get('manifold_loss'))}); wrote {out}"
        )
    return 0


def _refuse_contradictions(args: argparse.Namespace) -> None:
    """Options that cannot go together, refused before anything is read."""
    from moe_roma.distributed.group import launched
    from moe_roma.io.errors import RomaError

    if args.shard == "fsdp" and not launched():
        raise RomaError(
            "--shard fsdp shards the model over the processes of a torchrun job, but this is a single "
            "process; launch it with torchrun --nproc_per_node N -m moe_roma.cli train ... (or use "
            "--shard none)"
        )
    if args.resume and args.overwrite:
        raise RomaError(
            "--resume and --overwrite contradict each other: continue the run in --out, or replace it"
        )


def _settings(args: argparse.Namespace):
    """The routing store and the checked ``TrainConfig``: every setting is refused or accepted here."""
    from moe_roma.commands import apply_threads
    from moe_roma.io.config import config_flags
    from moe_roma.io.errors import RomaError
    from moe_roma.io.paths import check_regular_file
    from moe_roma.methods.roma.trainer import check_against_routing
    from moe_roma.routing.store import load_routing_store
    from moe_roma.training.trackers import check_trackers

    apply_threads(args.threads)
    check_trackers(args.report_to)  # a tracker that is not installed stops before any work
    check_regular_file(args.routing, "routing file")
    store = load_routing_store(args.routing)
    # The task loss scores answers the way collection judged them, unless a setting says otherwise.
    # ... and trains the layers the file recorded, unless told otherwise.
    recorded = {"scoring": store.meta.get("answer_scoring"), "layers": ",".join(map(str, store.layers))}
    config = TrainConfig.from_command_line(args.config, config_flags(args), args.overrides, recorded)
    check_against_routing(config, store, args.routing)
    if args.shard == "fsdp" and config.runtime.device_map is not None:
        raise RomaError(
            "--shard fsdp and device_map=auto are two ways to spread a model over GPUs; choose one"
        )
    return store, config


def _guard_out(args: argparse.Namespace):
    """``--out``, its ``TrainFolder`` and the guarded ``Output``: refused before any model loading."""
    from pathlib import Path

    from moe_roma.io.outputs import guard_output
    from moe_roma.io.paths import local_path
    from moe_roma.routing.store import sidecar_path
    from moe_roma.training.run_folder import TRAIN_RUN, TrainFolder

    out = Path(args.out)
    folder = TrainFolder(out)
    folder.check_reusable(resume=args.resume, overwrite=args.overwrite)
    inputs = {
        "--routing": [args.routing, sidecar_path(args.routing)],
        "--config": args.config,
        "--model": local_path(args.model),
    }
    output = guard_output(
        "--out",
        out,
        TRAIN_RUN,
        inputs=inputs,
        files=folder.outputs(),
        overwrite=args.overwrite,
        resume=args.resume,
    )
    return out, folder, output


def _warn_if_base_near_chance(store, config) -> None:
    """A base model at chance makes the successful set and the task loss mean little: say so."""
    from moe_roma.scoring.checks import warn_if_near_chance

    known = [i for i, c in enumerate(store.choices) if c]
    other = "continuation" if config.scoring == "letter" else "letter"
    warn_if_near_chance(
        [store.is_correct[i] for i in known],
        [len(store.choices[i]) for i in known],
        config.scoring,
        "the routing file's base accuracy",
        hint=f"its successful set and task loss mean little; collect with --scoring {other} and "
        f"train with scoring={other} if that is how the model answers",
    )


def _train(args: argparse.Namespace, store, config, out, folder, output):
    """Load the model and train inside the job, the interrupt handler and the folder's claim.

    Returns the trainer and its result; a stop or a failure leaves the folder as ``claim`` and
    ``output`` say (the old run stays when one was being replaced).
    """
    import os

    from moe_roma.commands import distributed_settings
    from moe_roma.distributed.group import check_divides, job
    from moe_roma.io.errors import Stopped
    from moe_roma.io.interrupts import Interrupted, handle_interrupts
    from moe_roma.training.state import load_train_state
    from moe_roma.training.trackers import open_trackers

    rank0 = int(os.environ.get("RANK", "0")) == 0
    state = folder.state_path
    if args.resume and state.is_file():
        load_train_state(state)  # a torn, edited or foreign-format state fails now, before any model loading
    trainer = None
    with (
        job(args.dist_timeout, distributed_settings(args)) as (_, world),
        handle_interrupts(),
        folder.claim(lock=rank0) as claim,
    ):
        # --overwrite trains into a staging folder (rank 0 writes, the others never do): the old run
        # stays until the new one is complete.
        staging = output.stage() if output.replaces and rank0 else None
        work = staging or out
        try:
            if world > 1:
                check_divides(config.schedule.batch_size)
            trainer = _trainer(args, store, config, work, world)
            run_info = {
                "config": config.to_dict(),
                "model": str(args.model),
                "routing": str(args.routing),
                "out": str(out),
                "resume": args.resume,
            }
            with open_trackers(args.report_to if rank0 else [], work, out.name, run_info) as trackers:
                trainer.trackers = trackers
                result = trainer.train(resume=args.resume)
            if staging is not None:
                output.commit(staging)
        except Interrupted as stop:
            if staging is not None:
                output.discard(staging)
            step, total = getattr(trainer, "last_step", None), getattr(trainer, "total_steps", None)
            said = claim.interrupted(step, total, str(stop), replacing=staging is not None)
            raise Stopped(said, stop.exit_status) from None
        except BaseException as exc:
            if staging is not None:
                output.discard(staging)
                said = output.restated(exc, staging)  # names the run's file, not the staging folder
                if said is not None:
                    raise said from None
            raise
    return trainer, result


def _trainer(args: argparse.Namespace, store, config, work, world: int):
    """The model (whole or this rank's shard) and a ``RouterTrainer`` that writes into ``work``."""
    from moe_roma.methods.roma.trainer import RouterTrainer

    model, tokenizer = _load(args, config, world)
    return RouterTrainer(
        model,
        tokenizer,
        store,
        config,
        work,
        progress=not args.no_progress,
        store_path=args.routing,
        run_meta={"sharding": _sharding(model, args.shard, world)},
    )


def _load(args: argparse.Namespace, config, world: int):
    """The whole model on this process's device, or (``--shard fsdp``) this rank's shard of it."""
    from moe_roma.distributed.fsdp import load_model_on_rank, load_sharded_model
    from moe_roma.distributed.group import check_device_map

    rt = config.runtime
    check_device_map(rt.device_map)
    if args.shard == "fsdp":
        return load_sharded_model(
            args.model,
            dtype=rt.dtype,
            attn_implementation=rt.attn_implementation,
            trust_remote_code=args.trust_remote_code,
        )
    return load_model_on_rank(
        args.model,
        world,
        dtype=rt.dtype,
        device=rt.device,
        attn_implementation=rt.attn_implementation,
        device_map=rt.device_map,
        trust_remote_code=args.trust_remote_code,
    )


def _sharding(model, shard: str, world: int) -> dict:
    """How the weights were spread: what each rank held (its local shards) against the whole model."""
    from moe_roma.distributed.fsdp import full_parameter_bytes, resident_parameter_bytes
    from moe_roma.distributed.group import gather_json

    return {
        "shard": shard,
        "world_size": world,
        "parameter_bytes": full_parameter_bytes(model),
        "resident_parameter_bytes": gather_json(resident_parameter_bytes(model)),
    }


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"
