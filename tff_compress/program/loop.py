"""The one program loop: an algorithm, run settings and a run directory.

Per round: sample the clients (`sampling.py`), run the algorithm's round,
evaluate every `eval_every` rounds (and after the last), then — with SIGINT
and SIGTERM held back — append the `metrics.csv` row, write TensorBoard and
save the checkpoint. A crash between the row and the checkpoint re-runs the
round: on resume the CSV is truncated to the checkpoint. Because every
random choice derives from (seed, round, client), a resumed run equals an
uninterrupted one bit for bit.

The run directory is claimed (its `config.json` written) only once the run
has started — data loaded, model built, runtime up — so a start that fails
(a missing data cache, a worker not reachable) leaves nothing that refuses
the corrected command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional, TextIO

import numpy as np
import tensorflow as tf

from tff_compress.program import algorithm as algorithm_lib
from tff_compress.program import checkpoints as checkpoints_lib
from tff_compress.program import progress as progress_lib
from tff_compress.program import run_dir as run_dir_lib
from tff_compress.program import sampling
from tff_compress.program import settings
from tff_compress.program import summary as summary_lib


@contextlib.contextmanager
def signals_deferred():
  """Blocks SIGINT/SIGTERM in this thread for the block (atomic bookkeeping)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  blocked = {signal.SIGINT, signal.SIGTERM}
  previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run(
    algorithm: algorithm_lib.Algorithm,
    run_settings: settings.RunSettings,
    run_dir: run_dir_lib.RunDir,
    out: TextIO = sys.stdout,
    after_round: Optional[Callable[[int], None]] = None,
) -> dict:
  """Trains `algorithm` for `run_settings.rounds`, writing/resuming `run_dir`.

  Args:
    algorithm: The algorithm adapter.
    run_settings: Rounds, sampling and evaluation schedule, seed, name.
    run_dir: The run directory (checked, not yet claimed).
    out: Where progress lines go.
    after_round: Called with the round number after its checkpoint is saved
      (tests use it to interrupt a run).

  Returns:
    The summary dict also written to `summary.json`.
  """
  rs = run_settings
  metrics_csv = run_dir_lib.MetricsCsv(run_dir.path('metrics.csv'))
  checkpoints = checkpoints_lib.Checkpoints(run_dir.path('checkpoints'))
  print(f'run dir {run_dir.root}\n{algorithm.describe()}', file=out,
        flush=True)

  with algorithm.execution(run_dir.root):
    state = algorithm.initial_state()
    resuming = run_dir.claim()
    start = 1
    if resuming:
      loaded, version = checkpoints.load_latest(state, out)
      if loaded is not None:
        state, start = loaded, version + 1
        print(f'resuming after round {version}', file=out, flush=True)
      metrics_csv.truncate_after(version)
    tb_writer = tf.summary.create_file_writer(run_dir.path('tb'))
    progress = progress_lib.Progress(rs.rounds, out, start)
    per_round = algorithm.sampled_per_round
    participations = sampling.participation_counts(
        algorithm.num_clients, per_round, rs.seed, start - 1)

    for round_num in range(start, rs.rounds + 1):
      t0 = time.monotonic()
      picked = sampling.sample_clients(algorithm.num_clients, per_round,
                                       rs.seed, round_num)
      result = algorithm.run_round(state, round_num, picked)
      state = result.state
      participations[picked] += 1
      row = {'round': round_num, 'eval_loss': None, 'eval_accuracy': None,
             'epsilon': None, 'clients': len(picked), **result.row}
      extra = dict(result.extra)
      if round_num % rs.eval_every == 0 or round_num == rs.rounds:
        evaluated, eval_extra = algorithm.evaluate(state)
        row.update(evaluated)
        extra.update(eval_extra)
      row['round_seconds'] = time.monotonic() - t0
      # Privacy spent so far, outside the timed span (RDP accounting of
      # sampling without replacement takes ~0.3 s).
      row['epsilon'] = algorithm.epsilon(round_num, participations)

      # CSV first, then the checkpoint: a crash in between re-runs this
      # round. SIGINT/SIGTERM wait until both are written.
      with signals_deferred():
        metrics_csv.append(row)
        with tb_writer.as_default(step=round_num):
          for key, value in {**row, **extra}.items():
            if key != 'round' and value is not None:
              tf.summary.scalar(key, value)
        tb_writer.flush()
        checkpoints.save(state, round_num)
      progress.round(row)
      if after_round is not None:
        after_round(round_num)

    final_weights = algorithm.final_weights(state)

  np.savez(run_dir.path('final_weights.npz'), *final_weights)
  rows = metrics_csv.read()
  summary = summary_lib.summarize(
      name=rs.name, algorithm=rs.algorithm, rows=rows,
      model_params=algorithm.model_params,
      client_model_params=algorithm.client_model_params)
  summary.update(algorithm.summary(rows, participations))
  run_dir_lib.write_json(run_dir.path('summary.json'), summary)
  run_dir_lib.plot_curves(run_dir.path('metrics.csv'),
                          run_dir.path('curves.png'), run_dir.title)
  summary_lib.print_summary(summary, out)
  return summary
