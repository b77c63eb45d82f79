"""Servers for tests and benchmarks: a fault-injecting OpenAI- and Anthropic-protocol server on
127.0.0.1 (``python -m harness.generation.testing --help`` runs one on its own)."""

from harness.generation.testing.configs import fault_config
from harness.generation.testing.fault_server import Attempt, FaultPlan, FaultServer, Ledger

__all__ = ["Attempt", "FaultPlan", "FaultServer", "Ledger", "fault_config"]
