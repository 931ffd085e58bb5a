"""Who takes part in a round, and in which order each client sees its data.

Every choice is a function of (config seed, round, client) only, drawn from
its own numpy stream (0: client sampling, 1: shuffle seeds, 2: client
faults, `faults/schedule.py`), so a resumed run draws exactly what an
uninterrupted one draws.
"""

from __future__ import annotations

import numpy as np

SAMPLING_STREAM = 0
SHUFFLE_STREAM = 1


def sample_clients(num_clients: int, per_round: int, seed: int,
                   round_num: int) -> np.ndarray:
  """Sorted client indices for `round_num`, a function of (seed, round) only."""
  rng = np.random.default_rng([seed, round_num, SAMPLING_STREAM])
  return np.sort(rng.choice(num_clients, size=per_round, replace=False))


def shuffle_seed(seed: int, round_num: int, client_index: int) -> int:
  """The data-order seed of one client in one round."""
  rng = np.random.default_rng([seed, round_num, SHUFFLE_STREAM, client_index])
  return int(rng.integers(0, 2**31 - 1))


def participation_counts(num_clients: int, per_round: int, seed: int,
                         rounds: int) -> np.ndarray:
  """How many of rounds 1..`rounds` each client was sampled in."""
  counts = np.zeros(num_clients, np.int64)
  for r in range(1, rounds + 1):
    counts[sample_clients(num_clients, per_round, seed, r)] += 1
  return counts
