"""Generation engines: API clients, vLLM on Ray, llama.cpp — behind :class:`harness.generation.base.Engine`."""

from harness.generation.base import ERROR_KINDS, Engine, Request, Result, build_engine
from harness.components import ENGINES, engine_class

__all__ = ["ENGINES", "ERROR_KINDS", "Engine", "Request", "Result", "build_engine", "engine_class"]
