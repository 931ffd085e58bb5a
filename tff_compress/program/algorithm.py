"""The interface between the program loop and a federated algorithm.

The loop (`program/loop.py`) owns everything that is the same for every
algorithm — the run directory, client sampling, resume, the per-round
metrics row, TensorBoard, checkpoints, signal-safe bookkeeping, progress and
the summary. An algorithm adapter owns its TFF computations and says what a
round and an evaluation produce. Adapters: `fedavg/algorithm.py` (every TFF
learning process: FedAvg and what composes around it), `gkt/algorithm.py`
(FedGKT, FedAvg-BN).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import Any, ContextManager, Optional, Sequence

import numpy as np


@dataclasses.dataclass
class RoundResult:
  """What one round produced.

  Attributes:
    state: The program state after the round.
    row: `metrics.csv` values of the round (`run_dir.METRICS_COLUMNS`; the
      loop fills `round`, `eval_*`, `epsilon` and `round_seconds`).
    extra: TensorBoard-only scalars.
  """

  state: Any
  row: dict
  extra: dict = dataclasses.field(default_factory=dict)


class Algorithm(abc.ABC):
  """A federated algorithm as the program loop drives it."""

  @property
  @abc.abstractmethod
  def num_clients(self) -> int:
    """Clients the loop samples from."""

  @property
  @abc.abstractmethod
  def sampled_per_round(self) -> int:
    """Clients sampled per round (more than K when over-selecting)."""

  @property
  @abc.abstractmethod
  def model_params(self) -> int:
    """Parameters of one float32 model (the compression baseline)."""

  @property
  def client_model_params(self) -> int:
    """Parameters of the model a client trains."""
    return self.model_params

  @abc.abstractmethod
  def describe(self) -> str:
    """Lines printed when the run starts (data, model, what clients do)."""

  def execution(self, log_dir: str) -> ContextManager[Any]:
    """The TFF execution context the run's computations need."""
    del log_dir
    return contextlib.nullcontext()

  @abc.abstractmethod
  def initial_state(self) -> Any:
    """The program state before round 1 (also the checkpoint template)."""

  @abc.abstractmethod
  def run_round(self, state: Any, round_num: int,
                picked: np.ndarray) -> RoundResult:
    """Round `round_num` (from 1) with the clients `picked` (sorted)."""

  @abc.abstractmethod
  def evaluate(self, state: Any) -> tuple[dict, dict]:
    """(`eval_loss`/`eval_accuracy` row values, TensorBoard extras)."""

  def epsilon(self, round_num: int,
              participations: np.ndarray) -> Optional[float]:
    """Privacy spent after `round_num` rounds, or None without DP."""
    del round_num, participations
    return None

  @abc.abstractmethod
  def final_weights(self, state: Any) -> list[np.ndarray]:
    """The deployable model's weights (trainable, then non-trainable)."""

  def summary(self, rows: Sequence[dict],
              participations: np.ndarray) -> dict:
    """Algorithm-specific `summary.json` keys."""
    del rows, participations
    return {}
