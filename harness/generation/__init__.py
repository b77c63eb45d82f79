"""Generation engines: API clients, vLLM on Ray, llama.cpp — behind :class:`harness.generation.base.Engine`."""

from harness.generation.base import ENGINES, ERROR_KINDS, Engine, Request, Result, build_engine

__all__ = ["ENGINES", "ERROR_KINDS", "Engine", "Request", "Result", "build_engine"]
