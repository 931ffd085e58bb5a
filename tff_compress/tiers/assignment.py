"""Which tier each client belongs to: fixed for the run, from the seed.

A phone's capability does not change between rounds, so a client's tier is
drawn once: the client indices 0..N-1 are permuted by a generator seeded by
the config seed alone (round 0 and stream 3 — client sampling uses rounds
from 1 with stream 0, shuffles 1, faults 2, `program/sampling.py`), and the
permutation is cut into consecutive blocks of `tier_counts` clients, tier 0
first. So the tiers hold exactly the configured shares of the population
(largest remainders), a client keeps its tier across rounds and resumes,
and the assignment is independent of the data (a tier is not correlated
with how much or which data a client has).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TIER_STREAM = 3


def tier_counts(num_clients: int, shares: Sequence[float]) -> list[int]:
  """Clients per tier: N × share, rounded by largest remainder.

  Floors first; the clients left over go to the tiers with the largest
  fractional parts (ties to the earlier tier), so the counts sum to N and
  each differs from N × share by less than 1.

  Raises:
    ValueError: No shares, or a share that is not positive.
  """
  if not shares or any(not s > 0 for s in shares):
    raise ValueError(f'tier shares must be positive, got {list(shares)}')
  total = float(sum(shares))
  exact = [num_clients * s / total for s in shares]
  # Rounded to 9 digits so that 3 × (50/3) does not lose a client to float
  # noise in the floor.
  counts = [int(np.floor(round(e, 9))) for e in exact]
  left = num_clients - sum(counts)
  order = sorted(range(len(shares)),
                 key=lambda i: (-(round(exact[i], 9) - counts[i]), i))
  for i in order[:left]:
    counts[i] += 1
  return counts


def assign_tiers(num_clients: int, shares: Sequence[float],
                 seed: int) -> np.ndarray:
  """int32 [num_clients]: the tier index of each client index.

  Args:
    num_clients: N, the clients the run samples from.
    shares: Share of each tier (normalized here).
    seed: The config seed.
  """
  counts = tier_counts(num_clients, shares)
  order = np.random.default_rng([seed, 0, TIER_STREAM]).permutation(
      num_clients)
  tiers = np.empty(num_clients, np.int32)
  start = 0
  for index, count in enumerate(counts):
    tiers[order[start:start + count]] = index
    start += count
  return tiers
