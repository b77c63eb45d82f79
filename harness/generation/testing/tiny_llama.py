"""A tiny random-weight Llama in Hugging Face format, built locally (no download), for running the
real vLLM engine on CPU in tests: 2 layers, hidden size 128, head_dim 64 (vLLM's CPU attention
rejects 16), a byte-level BPE tokenizer trained on local text, and a simple chat template.
Its text is gibberish; compare token ids and counts, not words.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _corpus() -> list[str]:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen of Python
        import this
    zen = "".join(this.d.get(ch, ch) for ch in this.s)
    base = zen + textwrap.dedent(
        """
        What is the capital of France? Paris. Two plus two is four. The quick brown fox jumps over
        the lazy dog. Routers send each prompt to the cheapest model that answers it well.
        """
    )
    return [base] * 20 + [str(i) for i in range(1000)]


def build_tiny_llama(out_dir: str | Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write the model and tokenizer to ``out_dir`` (idempotent) and return it."""
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out
