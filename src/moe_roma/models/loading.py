"""Load a causal LM and its tokenizer from a local folder or a hub id (no download here).

No code from a model folder is ever run unless the user asks: every load passes
``trust_remote_code`` (False unless ``--trust-remote-code``), and a folder whose ``config.json`` or
``tokenizer_config.json`` names its own Python classes (``auto_map``) is refused in one sentence
before transformers could ask "run the custom code? [y/N]".
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.io.errors import ModelError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    """``auto`` keeps the checkpoint's dtype on GPU but uses float32 on CPU (half is slow there)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return "auto"
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return DTYPES[dtype]


def resolve_device(device: str | None) -> torch.device:
    """``device`` as a torch device that exists here (None or ``auto``: the first GPU, else the CPU)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r} ({_first_line(exc)}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(
                f"device {device!r} asked for, but torch sees no GPU on this machine; use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise ModelError(
                f"device {device!r} asked for, but torch sees {count} GPU(s) (cuda:0 to cuda:{count - 1})"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError(
                f"device {device!r} asked for, but torch sees no Apple GPU here; use --device cpu"
            )
    return dev


TRUST_OPTION = "--trust-remote-code"


def check_no_remote_code(name_or_path: str | Path, trust_remote_code: bool = False) -> None:
    """Refuse a local model folder that needs its own Python code, unless the user trusts it."""
    if trust_remote_code:
        return
    folder = Path(str(name_or_path)).expanduser()
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            import json

            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # transformers will say what is wrong with it
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if auto_map:
            shown = (
                ", ".join(sorted(map(str, auto_map)))[:120]
                if isinstance(auto_map, dict)
                else str(auto_map)[:120]
            )
            raise ModelError(
                f"{path}: the folder asks to run its own Python code (auto_map: {shown}), which roma "
                f"never runs unless you pass {TRUST_OPTION}"
            )


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    check_no_remote_code(name_or_path, trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except Exception as exc:  # a damaged tokenizer.json raises whatever its parser raises
        raise ModelError(f"{name_or_path}: cannot load a tokenizer ({_first_line(exc)})") from None
    if tok.pad_token_id is None:
        # Batching needs a pad id; padded positions are masked, so any id serves.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def load_model(
    name_or_path: str | Path,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
    device_map: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode with every weight frozen.

    The weights are materialised straight on ``device`` (no copy through host memory first, which
    matters for a 30B model). ``attn_implementation`` is passed to transformers (``sdpa``,
    ``flash_attention_2``, ``eager`` ...); ``None`` keeps its default, SDPA where available.
    ``device_map="auto"`` spreads the layers over every visible GPU in this one process (accelerate's
    big-model placement, spilling to host memory when they are full) instead of putting it on ``device``.
    ``trust_remote_code`` (``--trust-remote-code``) lets a folder's own Python code run; without it a
    folder that needs some is refused.

    >>> from moe_roma.testbed import testbed_model_path  # doctest: +SKIP
    >>> model, tok = load_model(testbed_model_path())  # doctest: +SKIP
    """
    path = Path(str(name_or_path))
    if (path.is_absolute() or str(name_or_path).startswith((".", "~"))) and not path.exists():
        raise ModelError(f"{name_or_path}: model path does not exist")
    check_no_remote_code(name_or_path, trust_remote_code)
    if device_map is not None and device_map != "auto":
        raise ModelError(f"unknown device map {device_map!r}; the only one is auto (every visible GPU)")
    if device_map is not None and device is not None:
        raise ModelError(f"a device ({device}) and device_map=auto contradict each other; give one of them")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype == "auto" and dev.type == "cpu":
        torch_dtype = torch.float32
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(name_or_path),
            dtype=torch_dtype,
            device_map=device_map or dev,
            trust_remote_code=trust_remote_code,
            **extra,
        )
    except (
        Exception
    ) as exc:  # whatever transformers raises for a folder it cannot load: one sentence naming it
        raise ModelError(f"{name_or_path}: cannot load a causal LM ({_load_problem(exc)})") from None
    model.eval()
    model.requires_grad_(False)
    return model, load_tokenizer(name_or_path, trust_remote_code)


def model_identity(model: PreTrainedModel) -> dict:
    """What a checkpoint records about its base model, to refuse a mismatched one later."""
    cfg = model.config
    return {
        "name_or_path": str(getattr(cfg, "_name_or_path", "") or ""),
        "model_type": cfg.model_type,
        "architecture": type(model).__name__,
        "num_hidden_layers": int(getattr(cfg, "num_hidden_layers", 0) or 0),
        "hidden_size": int(getattr(cfg, "hidden_size", 0) or 0),
        "vocab_size": int(getattr(cfg, "vocab_size", 0) or 0),
    }


def model_fingerprint(model: PreTrainedModel) -> str:
    """SHA-256 of a loaded model: its config (less where it was loaded from) and every parameter and
    buffer, by name, dtype, shape and bytes. Results computed with the model are keyed on it, so a
    model that was replaced, retrained or edited in place is never taken for the one they came from."""
    import hashlib
    import json

    config = {
        k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")
    }
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    tensors = sorted([*model.named_parameters(), *model.named_buffers()], key=lambda kv: kv[0])
    with torch.no_grad():
        for name, t in tensors:
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            # Bytes, not values: bfloat16 has no numpy type, and -0.0 or a NaN's payload count too.
            h.update(t.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy())
    return h.hexdigest()


def _load_problem(exc: BaseException) -> str:
    """What went wrong in ``from_pretrained``, in words a user can act on."""
    text = str(exc)
    if type(exc).__name__ == "SafetensorError" or "incomplete metadata" in text or "header too large" in text:
        return f"a weight file is damaged or truncated: {_first_line(exc)}"
    if "trust_remote_code" in text:  # a hub model that needs its own code
        return f"it needs its own Python code, which roma never runs unless you pass {TRUST_OPTION}"
    if "ignore_mismatched_sizes" in text or "size mismatch" in text:
        return (
            "the shapes of its weights disagree with its config.json (was the config edited, e.g. its "
            "number of experts?)"
        )
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
