"""Run the fault server until interrupted, e.g. to try ``routerbench generate`` against it:

    python -m harness.generation.testing --port 8765 --rpm 600 --tpm 60000 --error-rate 0.05
"""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from harness.generation.testing.fault_server import FaultPlan, FaultServer


def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free one).")] = 8765,
    rpm: Annotated[Optional[float], typer.Option(help="Requests per minute before 429s.")] = None,
    tpm: Annotated[Optional[float], typer.Option(help="Tokens per minute before 429s.")] = None,
    error_rate: Annotated[float, typer.Option(help="Share of calls answered 500.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of calls that hang, then drop.")] = 0.0,
    drop_rate: Annotated[float, typer.Option(help="Share of calls whose connection is dropped.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option(help="Share of calls answered with broken JSON.")] = 0.0,
    completion_tokens: Annotated[int, typer.Option(help="Answer length in tokens.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the fault draws.")] = 0,
) -> None:
    """Serve OpenAI (/v1/chat/completions) and Anthropic (/v1/messages) protocols with faults."""
    plan = FaultPlan(rpm, tpm, error_rate=error_rate, timeout_rate=timeout_rate, drop_rate=drop_rate, malformed_rate=malformed_rate, completion_tokens=completion_tokens, seed=seed)
    with FaultServer(plan, port=port) as server:
        print(f"fault server on {server.url} (OpenAI) and {server.root_url} (Anthropic); Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"served: {dict(server.ledger.counts())}")


if __name__ == "__main__":
    typer.run(serve)
