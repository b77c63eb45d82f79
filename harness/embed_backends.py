"""The ``fast`` embedding backend: the same sentence-transformers model as ONNX, int8, on onnxruntime.

Built once per model (weights hash) into ``$ROUTERBENCH_CACHE/onnx/<model>-<hash>/model.onnx``:
the Transformer → mean Pooling → Normalize pipeline is exported as one graph (so pooling and
normalisation are the same arithmetic as sentence-transformers'), then its weight MatMuls are
dynamically quantized to int8 per channel (not fused by onnxruntime's transformer optimizer: its
fused Attention is no faster on short prompts and 25% slower on 256-token ones here).
Layer 0 and the feed-forward output projections of layers 1–2 stay float: fully quantized,
all-MiniLM-L6-v2 falls to cosine 0.98 against the float model on real prompts (and 4-bit or
block-wise 8-bit weights are no faster on a CPU without VNNI); with those kept, ≥ 0.993. The
caller tokenizes; this module only runs token ids.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.sources import cache_dir

TORCH_BACKEND = "torch"
FAST_BACKEND = "fast"
EMBED_BACKENDS = (TORCH_BACKEND, FAST_BACKEND)
DEFAULT_EMBED_BACKEND = TORCH_BACKEND
#: the store's embedder key suffix of the fast backend: its vectors never mix with float ones
FAST_KEY_SUFFIX = "@onnx-int8"
#: bump when the export or quantization changes, so cached models are rebuilt
RECIPE = "v4:eager:opset17:int8-per-channel:float-layer0+ffn2-1-2"
#: weight MatMuls that stay float (matched on the exported node names of BERT-like models)
KEEP_FLOAT = re.compile(r"/layer\.0/|/layer\.[12]/output/dense/")
PIP_FAST = "pip install onnxruntime onnx"
BATCH = 64


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise UserError(f"--embed-backend {FAST_BACKEND} needs onnxruntime and onnx: {PIP_FAST}") from exc
    return onnxruntime


def _check_pipeline(model) -> bool:
    """Whether the model is Transformer → mean Pooling (→ Normalize), the pipeline the graph reproduces;
    returns whether it normalises."""
    kinds = [type(m).__name__ for m in model]
    pooling = model[1].get_config_dict() if len(kinds) > 1 and kinds[1] == "Pooling" else {}
    mean = pooling.get("pooling_mode") == "mean" or (pooling.get("pooling_mode_mean_tokens") and not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"))
    if kinds[:1] != ["Transformer"] or not mean or kinds[2:] not in ([], ["Normalize"]):
        raise UserError(f"--embed-backend {FAST_BACKEND} supports Transformer → mean Pooling (→ Normalize) models; this one is {' → '.join(kinds)}: use --embed-backend {TORCH_BACKEND}")
    return kinds[2:] == ["Normalize"]


def weights_digest(model) -> str:
    """A digest of the model's weights and the recipe: the cache key of its ONNX build."""
    h = hashlib.blake2b(RECIPE.encode(), digest_size=8)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def onnx_dir(model, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(name.rstrip("/")) or "model")
    return cache_dir() / "onnx" / f"{safe}-{weights_digest(model)}"


def _export(model, normalize: bool, path: Path) -> None:
    """Export the float pipeline (token ids → sentence embedding) to ``path``."""
    import warnings

    import torch

    transformer = model[0].auto_model
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in model.tokenizer.model_input_names]

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            feed = dict(zip(names, inputs))
            hidden = self.transformer(**feed).last_hidden_state
            weight = feed["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)  # Pooling(mean)
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled

    sample = model.tokenizer(["a short text", "a somewhat longer second text"], padding=True, return_tensors="pt")
    args = tuple(sample[n] for n in names)
    transformer.eval()
    attention = getattr(transformer.config, "_attn_implementation", None)
    if attention not in (None, "eager") and hasattr(transformer, "set_attn_implementation"):
        transformer.set_attn_implementation("eager")  # SDPA exports to a graph 35% slower on 256 tokens
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pipeline().eval(), args, str(path), dynamo=False, opset_version=17, input_names=names, output_names=["embedding"],
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "embedding": {0: "batch"}},
            )  # fmt: skip
    finally:
        if attention not in (None, "eager") and hasattr(transformer, "set_attn_implementation"):
            transformer.set_attn_implementation(attention)


def build_onnx(model, name: str) -> Path:
    """The cached int8 model for ``model`` (a SentenceTransformer), built on first use.

    Written into a temporary directory beside the cache entry and renamed into place, so a crash
    or a concurrent build never leaves a half-written model behind."""
    target = onnx_dir(model, name)
    final = target / "model.onnx"
    if final.exists():
        return final
    _require_onnxruntime()
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise UserError(f"building the --embed-backend {FAST_BACKEND} model needs onnx: {PIP_FAST}") from exc
    normalize = _check_pipeline(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _export(model, normalize, tmp / "float.onnx")
        graph = onnx.load(str(tmp / "float.onnx")).graph
        keep = [n.name for n in graph.node if n.op_type == "MatMul" and KEEP_FLOAT.search(n.name)]
        quantize_dynamic(str(tmp / "float.onnx"), str(tmp / "model.onnx"), op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
        (tmp / "float.onnx").unlink()
        (tmp / "RECIPE").write_text(f"{RECIPE}\n{name}\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process built it first
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class OnnxEncoder:
    """Runs the int8 graph on batches of token ids (each with its special tokens)."""

    def __init__(self, path: Path, pad_id: int, input_names: list[str]) -> None:
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, os.cpu_count() or 1)
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.pad_id = pad_id
        self.names = [i.name for i in self.session.get_inputs()]
        if set(self.names) - set(input_names):
            raise ValueError(f"ONNX model inputs {self.names} are not the tokenizer's {input_names}")

    def encode(self, sequences: list[np.ndarray]) -> np.ndarray:
        """One L2-normalised (when the model normalises) float32 row per token sequence; call with
        sequences of similar lengths, each batch pads to its longest."""
        out = []
        for start in range(0, len(sequences), BATCH):
            batch = sequences[start : start + BATCH]
            lengths = np.array([len(s) for s in batch])
            mask = (np.arange(lengths.max()) < lengths[:, None]).astype(np.int64)
            ids = np.full(mask.shape, self.pad_id, dtype=np.int64)
            ids[mask.astype(bool)] = np.concatenate(batch)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out.append(self.session.run(None, {n: feed[n] for n in self.names})[0].astype(np.float32))
        return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


@lru_cache(maxsize=2)
def load_fast(name: str, model) -> OnnxEncoder:  # noqa: ANN001 - a SentenceTransformer
    """The fast encoder of embedder ``name`` (``model``: its loaded SentenceTransformer)."""
    _require_onnxruntime()
    tokenizer = model.tokenizer
    return OnnxEncoder(build_onnx(model, name), tokenizer.pad_token_id or 0, list(tokenizer.model_input_names))
