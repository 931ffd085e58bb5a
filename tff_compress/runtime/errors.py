"""Failures of the execution runtime (local worker, remote workers)."""

from __future__ import annotations


class RuntimeError_(RuntimeError):
  """Base class for execution-runtime failures."""


class WorkerStartError(RuntimeError_):
  """The TFF worker could not be started or did not become ready."""


class WorkerDiedError(RuntimeError_):
  """The TFF worker exited while a computation needed it."""


class WorkerUnavailableError(RuntimeError_):
  """A remote worker cannot be reached, at start or during a computation."""


class WorkerLostError(WorkerUnavailableError):
  """A remote worker died or stopped answering during a computation."""
