"""Shared helpers of the CPU benchmarks: synthetic models and data, interleaved timing, peak memory.

Nothing is downloaded: models are OLMoE-shaped configurations with random weights, the tokenizer
is a word-level vocabulary of ``w<i>`` words built in memory, and the data are random words.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

# Runnable as `python benchmarks/x.py` from a checkout without installing the package.
_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from moe_roma.data.example import LETTERS, MCExample  # noqa: E402

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
FIXED_WORDS = ["Question", "Answer", ".", ":", "?", *LETTERS]


def setup(threads: int) -> None:
    """Pin torch's intra-op threads: the cores are shared, and a fixed count keeps arms comparable."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Word level: specials, prompt words, letters A-Z, then ``w<i>`` up to ``vocab_size`` entries.

    `` A`` encodes to the single token ``A``, as after ``Answer:`` in real BPE vocabularies.
    """
    vocab: dict[str, int] = {}
    for w in SPECIAL + FIXED_WORDS:
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), vocab_size):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def olmoe(
    layers: int,
    hidden: int,
    vocab: int,
    intermediate: int | None = None,
    experts: int = 64,
    top_k: int = 8,
    heads: int = 4,
    seed: int = 0,
) -> OlmoeForCausalLM:
    """A random fp32 OLMoE (64 experts, top-8 as OLMoE-1B-7B) with the given depth, width and vocabulary.

    Routers are drawn at random (the library initialises them to zero, which ties every expert).
    """
    config = OlmoeConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or hidden // 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        num_experts=experts,
        num_experts_per_tok=top_k,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = OlmoeForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.normal_(0, 0.5)
    return model


# OLMoE-1B-7B's published shape: 16 layers, width 2048, 64 experts with top-8, vocabulary 50304.
OLMOE_1B_7B = dict(
    vocab_size=50304,
    hidden_size=2048,
    intermediate_size=1024,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=16,
    num_experts=64,
    num_experts_per_tok=8,
    max_position_embeddings=4096,
    rope_theta=10000.0,
)


# A 6-layer, 64-wide model of the same family, for the GPU scripts' smoke test on CPU.
OLMOE_QUICK = {
    **OLMOE_1B_7B,
    "vocab_size": 2048,
    "hidden_size": 64,
    "intermediate_size": 32,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}


def olmoe_1b_7b(
    device: str = "cuda", dtype: torch.dtype = torch.bfloat16, shape: dict | None = None
) -> OlmoeForCausalLM:
    """A randomly initialised full-size OLMoE-1B-7B (or ``shape``) on ``device``: timing needs no weights.

    Routers are drawn with the configuration's initializer range explicitly, so that the experts'
    load does not depend on how a transformers version initialises them.
    """
    torch.manual_seed(0)
    config = OlmoeConfig(**(shape or OLMOE_1B_7B), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device(device):
        model = OlmoeForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate.weight"):
                p.normal_(0, config.initializer_range)
    model.requires_grad_(False)
    return model


class Accelerator:
    """Synchronisation, peak memory and name of the GPU scripts' device (CUDA, or CPU in their smoke test)."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.cuda else platform.processor() or "cpu"


def emit_report(report: dict, out: str | None) -> None:
    """Print a GPU script's figures as JSON, and write them to ``out`` when given."""
    import json

    print(json.dumps(report, indent=2))
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")


def random_words(gen: torch.Generator, n: int, vocab: int) -> str:
    ids = torch.randint(len(SPECIAL) + len(FIXED_WORDS), vocab, (n,), generator=gen).tolist()
    return " ".join(f"w{i}" for i in ids)


def synthetic_examples(
    n: int,
    vocab: int,
    question_words: tuple[int, int],
    choice_words: tuple[int, int],
    n_choices: int = 4,
    seed: int = 0,
) -> list[MCExample]:
    """Random-word multiple-choice questions with lengths drawn from the given ranges."""
    gen = torch.Generator().manual_seed(seed)

    def length(lo_hi: tuple[int, int]) -> int:
        return int(torch.randint(lo_hi[0], lo_hi[1] + 1, (1,), generator=gen))

    out = []
    for i in range(n):
        question = random_words(gen, length(question_words), vocab)
        choices = tuple(random_words(gen, length(choice_words), vocab) for _ in range(n_choices))
        answer = int(torch.randint(0, n_choices, (1,), generator=gen))
        out.append(MCExample(f"q{i}", question, choices, answer))
    return out


# --- timing --------------------------------------------------------------------------------


def interleaved(
    arms: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall seconds of each arm, run in turn (A, B, A, B, ...) so that load from other jobs on the
    shared cores hits every arm alike; ``warmup`` untimed rounds first (allocator, lazy init)."""
    for _ in range(warmup):
        for fn in arms.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(repeats):
        names = list(arms) if r % 2 == 0 else list(reversed(arms))  # neither arm always goes first
        for name in names:
            t0 = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: Sequence[float]) -> str:
    """min-max of the repeats, for the reader to judge the noise."""
    return f"{_short(min(xs))}-{_short(max(xs))}"


def _short(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


# --- memory --------------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        match = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {key}")
    return int(match.group(1))


def peak_rss_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory above the level at entry, in MiB, of the block (Linux only).

    Writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark (VmHWM) to the
    current RSS, so the peak of just this block is read afterwards. torch's CPU allocator hands
    large blocks back to the OS when freed (glibc mmap), so freed temporaries do not hide in the
    baseline; use it inside :func:`pinned_mmap_threshold` so glibc's adaptive threshold cannot keep
    them in the heap instead.
    """

    def __enter__(self) -> PeakRSS:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        self.start_kib = _status_kib("VmRSS")
        self.mib = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        self.mib = (_status_kib("VmHWM") - self.start_kib) / 1024


@contextlib.contextmanager
def pinned_mmap_threshold(nbytes: int = 64 * 1024) -> Iterator[bool]:
    """glibc: within the block, serve every block over ``nbytes`` by mmap and return it to the OS on
    free; yields whether that could be set. Restores glibc's default thresholds (128 KiB) after.

    By default glibc raises its threshold after big frees (up to 32 MiB) and keeps such blocks in
    the heap, where a freed temporary would inflate the next baseline and hide from the peak.
    """
    m_trim, m_mmap, default = -1, -3, 128 * 1024
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(m_mmap, nbytes)) and bool(libc.mallopt(m_trim, 0))
    except (OSError, AttributeError):
        libc, ok = None, False
    try:
        yield ok
    finally:
        if libc is not None:
            libc.mallopt(m_mmap, default)
            libc.mallopt(m_trim, default)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's native start/stop lines (written to file descriptor 2, not sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def torch_peak_mib(fn: Callable[[], object]) -> float:
    """Peak bytes of live torch tensors while ``fn`` runs, above the level at its start, in MiB.

    Read from the allocation events of torch's profiler (each carries the allocator's running
    total), so it is exact and repeatable: the CPU counterpart of ``torch.cuda.max_memory_allocated``
    after ``reset_peak_memory_stats``. Memory outside torch tensors (Python objects) is not counted.
    """
    from torch._C._profiler import _EventType

    with (
        _quiet_stderr(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    stack, totals = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            totals.append(
                (node.start_time_ns, node.extra_fields.total_allocated, node.extra_fields.alloc_size)
            )
    if not totals:
        return 0.0
    totals.sort()
    before = totals[0][1] - totals[0][2]  # the running total just before the first allocation
    return (max(t for _, t, _ in totals) - before) / 2**20


# --- reporting -----------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [
        [c if isinstance(c, str) else _num(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(x: object) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{datetime.date.today()}  {platform.machine()} {os.cpu_count()} cores (load {load:.1f})  "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
