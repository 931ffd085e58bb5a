"""A pruned run's learning processes, one per schedule phase.

Each phase has its own static shapes (kept counts), so its own TFF process;
all share one state type (`pruning/process.py`), so the driver hands the
state from one to the next at a mask update. All phases are built when the
run is (a few seconds of tracing each): a phase that cannot take over the
state fails the start, not a later round, and `round_seconds` never
includes tracing.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from tff_compress.pruning import masks as masks_lib
from tff_compress.pruning import schedule as schedule_lib


class PhaseStateError(RuntimeError):
  """Two phases' processes disagree on the state type (cannot hand over)."""


class Phases:
  """The `Training` of each phase of `schedule`, built by `build`.

  Args:
    schedule: The run's phases.
    layout: The run's mask layout.
    build: sparsity -> the `fedavg.process.Training` of a phase (its
      `process` and `client_task`).
    client_task: sparsity -> the model a client of that phase trains
      (cheap; no process is built).

  Raises:
    PhaseStateError: a phase's process has another state type than the
      first phase's.
  """

  def __init__(self, schedule: schedule_lib.Schedule,
               layout: masks_lib.Layout, build: Callable[[float], Any],
               client_task: Callable[[float], Any]):
    self.schedule = schedule
    self.layout = layout
    self._client_task = client_task
    self._trainings = []
    for i, phase in enumerate(schedule.phases):
      training = build(phase.sparsity)
      got = training.process.initialize.type_signature.result
      if self._trainings:
        want = self._trainings[0].process.initialize.type_signature.result
        # Structural: containers may differ in class identity (TFF's DP
        # state holds a namedtuple class made per query).
        if not got.is_equivalent_to(want):
          raise PhaseStateError(
              f'pruning phase {i} (from round {phase.start}) has state '
              f'type {got}; phase 0 has {want}')
      self._trainings.append(training)

  def training(self, round_num: int):
    """The `Training` that runs round `round_num` (from 1)."""
    return self._trainings[self.schedule.index(round_num)]

  def client_task(self, round_num: int):
    """The model clients of round `round_num` train."""
    return self._client_task(self.schedule.phase(round_num).sparsity)

  def mask_bytes_down(self, round_num: int, picked: Sequence[int],
                      sampled: Callable[[int], Sequence[int]]) -> int:
    """Bytes of the masks sent in round `round_num`: the packed masks to
    every picked client that does not hold the current ones."""
    return self.layout.mask_message_bytes() * self.schedule.mask_recipients(
        round_num, picked, sampled)

  def report(self, trainable: Sequence[np.ndarray]) -> dict:
    """`summary.json`'s `pruning` block from the final trainable weights."""
    report = self.layout.report(trainable)
    final = self.schedule.final_sparsity
    out = {
        'structure': self.layout.structure,
        'layers': list(self.layout.layers),
        'target_sparsity': final,
        'achieved_sparsity': report.sparsity,
        'achieved_sparsity_per_layer': report.per_layer(),
        'mask_updates': [{'round': p.start, 'sparsity': p.sparsity}
                         for p in self.schedule.phases if p.sparsity > 0],
        'mask_message_bytes': self.layout.mask_message_bytes(),
        'nonzero_params': int(sum(np.count_nonzero(w) for w in trainable)),
    }
    if self.layout.structure == 'units':
      # Measured: a unit is kept if any of its incoming weights or its
      # bias is non-zero; `target_sparsity` is the fraction of units.
      task = self._client_task(final)
      out['units'] = self.layout.units
      out['kept_units'] = self.layout.alive_units(trainable)
      out['pruned_model_params'] = task.num_params
      out['pruned_model_train_flops_per_example'] = (
          task.train_flops_per_example)
    return out

  def describe(self) -> str:
    """One line for the start of a run."""
    layout, final = self.layout, self.schedule.final_sparsity
    what = ('units' if layout.structure == 'units' else
            f'{layout.structure} kernel weights')
    line = (f'pruning {", ".join(layout.layers)} to {100 * final:.1f} % '
            f'{what}; {self.schedule.describe()}')
    if layout.structure == 'units':
      task = self._client_task(final)
      line += (f' | final model {task.num_params:,} params, '
               f'{task.train_flops_per_example / 1e6:.2f} MFLOPs/example '
               'to train')
    return line
