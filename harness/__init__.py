"""routerbench's machinery: the outcome store, importers, metrics, evaluation, reports and CLI."""

from harness.store import AppendResult, Store
from harness.errors import UserError
from harness.matrix import OutcomeMatrix

__all__ = ["AppendResult", "OutcomeMatrix", "Store", "UserError"]
