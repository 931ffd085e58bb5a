"""The pruning schedule over rounds: phases of constant sparsity.

tfmot defines the schedule: its `PolynomialDecay` (or `ConstantSparsity`
when `begin_round == end_round`) is evaluated with step = round number, and
every step where it says "prune" starts a *phase*: the rounds until the next
such step train under one mask of that step's sparsity. A phase has static
tensor shapes (its kept counts), so each phase is one TFF learning process
(`pruning/process.py`) and a run switches process at mask updates.

Rounds count from 1. Phase 0 starts at round 1, dense (sparsity 0, no mask
yet) unless a step falls on round 1; a step whose sparsity equals the
current one (tfmot's first step, at `begin_round`) starts no new phase.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Phase:
  """Rounds `start`.. (until the next phase) train at `sparsity`."""
  start: int
  sparsity: float


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The phases of a pruned run, in round order (phase 0 at round 1)."""

  phases: tuple[Phase, ...]

  def __post_init__(self):
    if not self.phases or self.phases[0].start != 1:
      raise ValueError(f'a schedule starts at round 1, got '
                       f'{self.phases[:1]}')
    starts = [p.start for p in self.phases]
    if starts != sorted(set(starts)):
      raise ValueError(f'phase starts must increase: {starts}')

  @classmethod
  def from_settings(cls, pruning) -> 'Schedule':
    """tfmot's schedule of `pruning.*` (a `PruningSettings`), step = round."""
    # pylint: disable=g-import-not-at-top  (tfmot only when pruning)
    import tensorflow_model_optimization as tfmot
    # pylint: enable=g-import-not-at-top
    sparsity = tfmot.sparsity.keras
    b, e = pruning.begin_round, pruning.end_round
    if b == e:
      rule = sparsity.ConstantSparsity(pruning.target, begin_step=b,
                                       end_step=e, frequency=1)
    else:
      rule = sparsity.PolynomialDecay(
          initial_sparsity=0.0, final_sparsity=pruning.target,
          begin_step=b, end_step=e, power=pruning.power,
          frequency=pruning.frequency)
    phases = [Phase(1, 0.0)]
    for step in range(b, e + 1):
      prune, s = rule(step)
      # float32 is tfmot's precision; the round trip keeps e.g. 0.5 exact.
      s = float(np.float32(s))
      if not bool(prune) or s == phases[-1].sparsity:
        continue
      if step == 1:  # pruned from the first round on
        phases[0] = Phase(1, s)
      else:
        phases.append(Phase(step, s))
    return cls(tuple(phases))

  @property
  def final_sparsity(self) -> float:
    return self.phases[-1].sparsity

  def index(self, round_num: int) -> int:
    """The phase index of round `round_num` (from 1)."""
    if round_num < 1:
      raise ValueError(f'rounds count from 1, got {round_num}')
    return bisect.bisect_right([p.start for p in self.phases], round_num) - 1

  def phase(self, round_num: int) -> Phase:
    return self.phases[self.index(round_num)]

  def mask_recipients(self, round_num: int, picked: Sequence[int],
                      sampled: Callable[[int], Sequence[int]]) -> int:
    """How many of the clients `picked` in `round_num` need the mask sent.

    A client keeps the last mask it received, so it needs the current one
    unless it was sampled earlier in the current phase (every sampled
    client receives the round's broadcast, whether or not it reports).
    No client needs a mask in phase 0 (dense).

    Args:
      round_num: The round (from 1).
      picked: The clients sampled in it.
      sampled: Round -> the clients sampled in that round (the driver's
        deterministic sampling).
    """
    phase = self.phase(round_num)
    if phase.sparsity == 0.0:
      return 0
    seen = set()
    for r in range(phase.start, round_num):
      seen.update(int(c) for c in sampled(r))
    return sum(1 for c in picked if int(c) not in seen)

  def describe(self) -> str:
    """'mask updates at rounds 4, 7, 10 -> 35.2 %, 48.1 %, 50.0 %'."""
    pruned = [p for p in self.phases if p.sparsity > 0]
    return (f'mask updates at rounds '
            f'{", ".join(str(p.start) for p in pruned)} -> '
            f'{", ".join(f"{100 * p.sparsity:.1f} %" for p in pruned)}')
