"""Prompt embeddings with the real all-MiniLM-L6-v2 (from PyPI, offline), cached in a real store."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness.embeddings as embeddings
from harness.store import EMBEDDINGS, Store
from harness.embed_backends import FAST_BACKEND, FAST_KEY_SUFFIX, PIP_FAST, build_onnx, load_fast
from harness.embeddings import (
    DEFAULT_EMBED_TEXT,
    DEFAULT_EMBEDDER,
    attach_features,
    distinct_texts,
    embed_texts,
    embedding_rates,
    encode,
    load_embedder,
    prompt_texts,
    token_ids,
)
from harness.errors import UserError
from tests.conftest import SHARED_DATA, require_shared
from harness.matrix import outcome_matrices


def _onnx_skip() -> pytest.MarkDecorator:
    """Skip the fast backend where its optional dependency is missing, except in CI (CI=true),
    which installs it: there a missing onnxruntime must fail the run, not hide the backend."""
    missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing) and not os.environ.get("CI"), reason=f"{', '.join(missing)} not installed (`{PIP_FAST}`; CI installs it)")


needs_onnx = _onnx_skip()


def _family_prompts(name: str) -> list[str]:
    folder = require_shared(SHARED_DATA / "routerbench")
    return pd.concat([pd.read_csv(folder / f"{name}_{part}.csv") for part in ("train", "test")]).prompt.tolist()


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("sentence_transformers")
    return load_embedder(DEFAULT_EMBEDDER)


def test_embeddings_are_computed_once_and_cached(model, tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    texts = np.array(["What is 2 + 2?", "['What is 2 + 2?']", "What is 2 + 2?", "Name a prime."], dtype=object)
    calls = []
    first = embed_texts(store, texts, on_progress=lambda done, total: calls.append((done, total)))
    assert first.shape == (4, 384) and first.dtype == np.float32
    assert calls[-1] == (6, 6)  # three distinct texts, each tokenized and embedded once
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.allclose(first[0], first[1])  # the list-literal string is a different text
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)  # the model normalises
    direct = model.encode(list(texts[[0, 1, 3]]), convert_to_numpy=True)
    np.testing.assert_allclose(first[[0, 1, 3]], direct, atol=1e-6)

    calls.clear()
    again = embed_texts(Store(tmp_path / "s"), texts[::-1].copy(), on_progress=lambda d, t: calls.append(d))
    assert calls == [] and len(Store(tmp_path / "s").history()) == 1  # the embeddings table, written once
    np.testing.assert_array_equal(again, first[::-1])
    more = embed_texts(store, np.array(["Name a prime.", "A new one."], dtype=object))
    np.testing.assert_array_equal(more[0], first[3])
    assert len(store.read_table(EMBEDDINGS)) == 4


def test_text_choice(imported_store) -> None:
    m = outcome_matrices(imported_store, families=["mbpp"], with_prompts=True)["mbpp"]
    original, plain = prompt_texts(m, "original"), prompt_texts(m, "plain")
    i = list(m.sample_ids).index("mbpp.dev.1")
    assert original[i] == "['Write a python function to identify non-prime numbers.']"
    assert plain[i] == "Write a python function to identify non-prime numbers."
    with pytest.raises(UserError, match="--embed-text must be one of distinct, original, plain, tail"):
        prompt_texts(m, "raw")


def test_missing_embedder_directory_is_a_clear_error(model, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot load embedder '.*no-such-model': no such model directory"):
        load_embedder(str(tmp_path / "no-such-model"))


def test_tail_sees_the_question_after_shared_few_shot_exemplars(model, tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    exemplars = " ".join(f"Question {i}: what is {i} plus {i}? Answer: {2 * i}." for i in range(80))  # ≫ 256 tokens
    texts = np.array([f"{exemplars} Question: name a prime.", f"{exemplars} Question: who wrote Hamlet?"], dtype=object)
    head = embed_texts(store, texts)
    np.testing.assert_array_equal(head[0], head[1])  # only the shared exemplars fit: one vector
    tail = embed_texts(store, texts, cut="left")
    assert not np.allclose(tail[0], tail[1])
    assert {p for p in store.read_table(EMBEDDINGS).column("embedder").to_pylist()} == {DEFAULT_EMBEDDER, f"{DEFAULT_EMBEDDER}@cut-left"}


def test_texts_that_cut_to_the_same_tokens_are_embedded_once_with_the_same_vector(model, monkeypatch) -> None:
    exemplars = " ".join(f"Question {i}: what is {i} plus {i}? Answer: {2 * i}." for i in range(80))
    texts = [f"{exemplars} Question: name a prime.", "a short prompt", f"{exemplars} Question: who wrote Hamlet?", "another one"]
    alone = np.stack([encode([t], DEFAULT_EMBEDDER)[0] for t in texts])
    seen: list[int] = []
    real = model.encode
    monkeypatch.setattr(model, "encode", lambda batch, **kw: seen.append(len(batch)) or real(batch, **kw))
    ticks: list[tuple[int, int]] = []
    together = encode(texts, DEFAULT_EMBEDDER, lambda done, total: ticks.append((done, total)))
    assert sum(seen) == 3 and ticks[-1] == (8, 8)  # the two long prompts are one model input; 2 steps per prompt
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_distinct_strips_what_every_prompt_of_the_family_shares() -> None:
    shots = "Q: 1 + 1? A: 2\\n\\nQ: 2 + 2? A: 4\\n\\n"  # RouterBench's list-literal strings hold a literal backslash-n
    texts = np.array([f"['{shots}Which planet is red?\\nAnswer:']", f"['{shots}Who wrote Hamlet?\\nAnswer:']", f"['{shots}What is 3 + 3?\\nAnswer:']"], dtype=object)
    assert distinct_texts(texts).tolist() == ["Which planet is red", "Who wrote Hamlet", "What is 3 + 3"]  # all end in "?"
    # "Wh" is shared too, but a cut never splits a word, and the escape before it is not part of it
    assert distinct_texts(texts[:2]).tolist() == ["Which planet is red", "Who wrote Hamlet"]
    assert distinct_texts(np.array(["ends in Ian.", "ends in Dennis."], dtype=object)).tolist() == ["Ian", "Dennis"]
    assert distinct_texts(np.array(["only one prompt"], dtype=object)).tolist() == ["only one prompt"]
    assert distinct_texts(np.array(["same", "same"], dtype=object)).tolist() == ["same", "same"]
    # a prompt that is only the shared part (a prefix of the other) is never stripped to nothing
    assert distinct_texts(np.array(["Answer:", "Answer: B"], dtype=object)).tolist() == ["Answer:", " B"]
    assert distinct_texts(np.array(["abab", "ab"], dtype=object)).tolist() == ["abab", "ab"]  # prefix and suffix never overlap


def test_distinct_is_per_family_and_the_default(imported_store, monkeypatch) -> None:
    ms = outcome_matrices(imported_store, families=["arc-challenge", "winogrande"], with_prompts=True)
    arc, wino = prompt_texts(ms["arc-challenge"], "distinct"), prompt_texts(ms["winogrande"], "distinct")
    original = prompt_texts(ms["arc-challenge"], "original")
    assert len(set(arc)) == len(arc) and len(set(wino)) == len(wino)  # "original": one vector per family
    assert not any("Please answer with the letter" in t for t in arc) and all(t in o for t, o in zip(arc, original))
    both = distinct_texts(np.concatenate([original, prompt_texts(ms["winogrande"], "original")]))
    assert np.mean([len(t) for t in both[: len(arc)]]) > 3 * np.mean([len(t) for t in arc])  # across families the exemplars would stay
    seen = {}

    def fake(store, texts, *args):  # noqa: ANN001, ANN002, ANN202 - records what would be embedded
        seen["texts"] = texts
        return np.zeros((len(texts), 2), np.float32)

    monkeypatch.setattr(embeddings, "embed_texts", fake)
    out = attach_features(imported_store, ms)
    assert DEFAULT_EMBED_TEXT == "distinct" and out["winogrande"].features.shape == (len(wino), 2)
    assert seen["texts"].tolist() == [*arc, *wino]


def test_character_precut_gives_the_token_ids_of_the_whole_text(model) -> None:
    arc = _family_prompts("arc_challenge")
    texts = [" ".join(arc[i : i + 8]) for i in range(0, 160, 4)]  # ~16k characters each
    texts += ["x" * 5000 + " tail", "word " + " " * 9000 + "end " * 300, "short"]  # cuts with too few tokens: whole text
    for cut in ("right", "left"):
        ids, cuts = token_ids(texts, DEFAULT_EMBEDDER, cut)
        model.tokenizer.truncation_side = cut
        try:
            whole = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
        finally:
            model.tokenizer.truncation_side = "right"
        assert [x.tolist() for x in ids] == whole
        assert max(len(c) for c in cuts[:40]) < 3000 < min(len(t) for t in texts[:40])  # what was tokenized was cut


def test_progress_covers_tokenizing_and_embedding(model, monkeypatch) -> None:
    texts = [f"prompt number {i}" for i in range(300)] + ["prompt number 1"]
    calls: list[tuple[int, int]] = []
    at_first_batch: list[int] = []
    real = model.encode
    monkeypatch.setattr(model, "encode", lambda batch, **kw: at_first_batch.append(len(calls)) or real(batch, **kw))
    encode(texts, DEFAULT_EMBEDDER, lambda done, total: calls.append((done, total)))
    assert at_first_batch[0] >= 1 and calls[at_first_batch[0] - 1] == (301, 602)  # reported while tokenizing, before the model
    assert calls[-1] == (602, 602) and [d for d, _ in calls] == sorted(d for d, _ in calls)


@needs_onnx
def test_fast_backend_matches_the_float_model_and_is_cached(model, tmp_path: Path) -> None:
    mbpp = [p["prompt"] for p in json.loads(require_shared(SHARED_DATA / "mbpp" / "sanitized-mbpp.json").read_text())][:20]
    arc = distinct_texts(np.array(_family_prompts("arc_challenge"), dtype=object))[:15]
    wino = distinct_texts(np.array(_family_prompts("winograde"), dtype=object))[:15]
    texts = np.array([*mbpp, *arc, *wino], dtype=object)
    path = build_onnx(model, DEFAULT_EMBEDDER)
    built = path.stat().st_mtime_ns
    assert build_onnx(model, DEFAULT_EMBEDDER) == path and path.stat().st_mtime_ns == built  # built once
    assert [p.name for p in path.parent.parent.iterdir()] == [path.parent.name]  # no temporary directory left
    store = Store(tmp_path / "s")
    fast = embed_texts(store, texts, backend=FAST_BACKEND)
    exact = embed_texts(store, texts)
    cosine = (fast * exact).sum(1)
    assert cosine.min() >= 0.99, f"min cosine {cosine.min():.4f}"
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert set(store.read_table(EMBEDDINGS).column("embedder").to_pylist()) == {DEFAULT_EMBEDDER, DEFAULT_EMBEDDER + FAST_KEY_SUFFIX}
    rates = embedding_rates(list(texts[:16]))
    assert rates["fast_per_s"] > 0 and rates["torch_per_s"] > 0 and rates["cosine_min"] >= 0.99


def test_fast_backend_without_onnxruntime_is_a_one_line_error(model, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match="--embed-backend fast needs onnxruntime and onnx: pip install onnxruntime onnx"):
        load_fast.__wrapped__(DEFAULT_EMBEDDER, model)
    with pytest.raises(UserError, match="--embed-backend must be one of torch, fast, not 'gpu'"):
        encode(["a"], DEFAULT_EMBEDDER, backend="gpu")
