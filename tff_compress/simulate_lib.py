"""One federated training run: config -> run directory.

Library code: no flags. `simulate.py` parses flags and calls :func:`run`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import threading
import time
from typing import Callable, Optional, TextIO

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress import runtime
from tff_compress.data import federated_data
from tff_compress.data import on_worker
from tff_compress.data import registry as data_registry
from tff_compress.faults import rounds as fault_rounds
from tff_compress.faults import schedule as fault_schedule
from tff_compress.learning import process as process_lib
from tff_compress.learning import task as task_lib
from tff_compress.privacy import accounting
from tff_compress.program import run_dir as run_dir_lib

_EVAL_BATCH = 100
_CKPT_PREFIX = 'round_'


def sample_clients(num_clients: int, per_round: int, seed: int,
                   round_num: int) -> np.ndarray:
  """Sorted client indices for `round_num`, a function of (seed, round) only."""
  rng = np.random.default_rng([seed, round_num, 0])
  return np.sort(rng.choice(num_clients, size=per_round, replace=False))


def shuffle_seed(seed: int, round_num: int, client_index: int) -> int:
  """The tf.data shuffle seed of one client in one round."""
  rng = np.random.default_rng([seed, round_num, 1, client_index])
  return int(rng.integers(0, 2**31 - 1))


def _eval_datasets(data: federated_data.FederatedData, num: int):
  return [
      tf.data.Dataset.from_tensor_slices(
          collections.OrderedDict(x=data.test_x[a:b], y=data.test_y[a:b])
      ).batch(_EVAL_BATCH)
      for a, b in on_worker.eval_bounds(len(data.test_y), num)
  ]


@dataclasses.dataclass
class Progress:
  """Prints one line per round with an ETA."""

  rounds: int
  out: TextIO
  start_round: int

  def __post_init__(self):
    self._t0 = time.monotonic()

  def round(self, row: dict) -> None:
    r = row['round']
    done = r - self.start_round + 1
    elapsed = time.monotonic() - self._t0
    eta = elapsed / done * (self.rounds - r)
    acc = row.get('eval_accuracy')
    acc_s = f'eval acc {acc:.4f}' if acc is not None else 'eval acc   -   '
    if row['train_loss'] is None:  # nobody reported
      train_s = 'train loss    -   acc    -   '
    else:
      train_s = (f'train loss {row["train_loss"]:.4f}'
                 f' acc {row["train_accuracy"]:.4f}')
    print(
        f'round {r:>4}/{self.rounds} | {train_s} | {acc_s} | down'
        f' {row["bytes_down"] / 1e6:8.2f} MB up {row["bytes_up"] / 1e6:8.2f} MB'
        f' | {row["round_seconds"]:6.2f} s | ETA {_hms(eta)}'
        + (f' | ε {row["epsilon"]:.3g}' if row.get('epsilon') is not None
           else '')
        + (f' | {row["clients_reported"]}/{row["clients"]} reported,'
           f' {row["clients_dropped"]} dropped, {row["clients_late"]} late,'
           f' {row["zeroed"] or 0} zeroed, {row["round_latency"]:.1f} s sim'
           + (' | SKIPPED (model unchanged)' if row['skipped'] else '')
           if row.get('round_latency') is not None else ''),
        file=self.out, flush=True)


def _hms(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h:d}:{m:02d}:{s:02d}' if h else f'{m:d}:{s:02d}'


@contextlib.contextmanager
def _signals_deferred():
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


def _load_latest_valid(state_manager, structure, checkpoint_dir, out):
  """Newest checkpoint that loads; a torn one (SIGKILL mid-save) is removed."""
  versions = asyncio.run(state_manager.get_versions()) or []
  for version in sorted(versions, reverse=True):
    try:
      return asyncio.run(state_manager.load(version, structure)), version
    except Exception as e:  # pylint: disable=broad-except
      print(f'checkpoint of round {version} unreadable ({type(e).__name__});'
            ' using an older one', file=out, flush=True)
      shutil.rmtree(os.path.join(checkpoint_dir, f'{_CKPT_PREFIX}{version}'),
                    ignore_errors=True)
  return None, 0


def _flat_weights(weights: tff.learning.models.ModelWeights) -> list:
  return [np.asarray(w) for w in tf.nest.flatten(
      (weights.trainable, weights.non_trainable))]


def _gkt_run():
  # Imported on use: tff_compress/gkt/runner.py reuses this module's loop
  # plumbing, so a dependency the other way round would be a cycle; the
  # binaries (//tff_compress:simulate, :tradeoff) depend on it.
  from tff_compress.gkt import runner  # pylint: disable=g-import-not-at-top
  return runner.run


# Config `algorithm` values run by another program loop -> a function
# returning its `run` (same signature); 'fedavg' is this module's loop.
_OTHER_ALGORITHMS: dict[str, Callable[[], Callable[..., dict]]] = {
    'fedgkt': _gkt_run,
    'fedavg_bn': _gkt_run,
}


def run(
    config: ml_collections.ConfigDict,
    run_dir: str,
    out: TextIO = sys.stdout,
    after_round: Optional[Callable[[int], None]] = None,
) -> dict:
  """Trains per `config`, writing/resuming `run_dir`; returns the summary.

  Args:
    config: A validated config (see `config_lib`).
    run_dir: Run directory; created, or resumed if it holds this config.
    out: Where progress lines go.
    after_round: Called with the round number after its checkpoint is saved
      (tests use it to interrupt a run).

  Returns:
    The summary dict also written to `summary.json`.
  """
  if config.algorithm in _OTHER_ALGORITHMS:
    return _OTHER_ALGORITHMS[config.algorithm]()(
        config, run_dir, out=out, after_round=after_round)
  resuming = run_dir_lib.prepare(run_dir, config)
  data = data_registry.build_federated_data(config.data, seed=config.seed)
  task = task_lib.build_task(config.model.name, data, seed=config.seed)
  training = process_lib.build_training(config, task)
  process = training.process
  evaluation = process_lib.build_evaluation(task)
  eval_datasets = _eval_datasets(data, config.eval_clients)
  metrics_csv = run_dir_lib.MetricsCsv(os.path.join(run_dir, 'metrics.csv'))
  checkpoint_dir = os.path.join(run_dir, 'checkpoints')
  state_manager = tff.program.FileProgramStateManager(
      checkpoint_dir, prefix=_CKPT_PREFIX, keep_total=2)
  tb_writer = tf.summary.create_file_writer(os.path.join(run_dir, 'tb'))
  client_ids = data.client_ids
  faults = fault_schedule.FaultSpec.from_config(config.faults)
  sampled_per_round = faults.num_sampled(config.clients_per_round)
  accountant = accounting.RunAccountant.from_config(
      config, [data.client_size(c) for c in client_ids])

  print(
      f'run dir {run_dir}\n'
      f'data {data.name}: {len(client_ids)} clients, '
      f'{sum(data.client_size(c) for c in client_ids)} train / '
      f'{len(data.test_y)} test examples | model {config.model.name}: '
      f'{task.num_params:,} params, '
      f'{task.train_flops_per_example / 1e6:.2f} MFLOPs/example to train',
      file=out, flush=True)
  if training.plan is not None:
    sub = training.client_task
    print(
        f'federated dropout ({config.dropout.mask} masks): clients train '
        + ', '.join(f'{k} {v}' for k, v in training.plan.widths.items())
        + f' | {sub.num_params:,} params, '
        f'{task.train_flops_per_example / sub.train_flops_per_example:.2f}x '
        'fewer FLOPs/example', file=out, flush=True)

  targets = runtime.parse_workers(config.runtime.workers)
  if targets:
    store = on_worker.prepare_store(
        data, on_worker.resolve_data_dir(config.runtime.worker_data_dir))
    print(f'{len(targets)} remote TFF workers: {", ".join(targets)} | '
          f'client data {store.relative_dir}', file=out, flush=True)
    context = runtime.remote_context(
        targets, connect_timeout=config.runtime.connect_timeout,
        rpc_timeout=config.runtime.rpc_timeout)
  else:
    context = runtime.local_context(log_dir=run_dir)
  with context as executor:
    feed = None
    if targets:  # the workers build client data from descriptors
      on_worker.check_workers(executor, store)
      feed = on_worker.WorkerFeed.build(
          training, evaluation, store, batch_size=config.client.batch_size,
          epochs=config.client.epochs, eval_clients=config.eval_clients,
          eval_batch_size=_EVAL_BATCH)
      training, evaluation = feed.training, feed.evaluation
      process, eval_datasets = training.process, feed.eval_descriptors
    state = process.initialize()
    start = 1
    if resuming:
      loaded, version = _load_latest_valid(
          state_manager, state, checkpoint_dir, out)
      if loaded is not None:
        state, start = loaded, version + 1
        print(f'resuming after round {version}', file=out, flush=True)
      metrics_csv.truncate_after(version)
    progress = Progress(config.rounds, out, start)
    eval_state = evaluation.initialize()
    participations = participation_counts(
        len(client_ids), sampled_per_round, config.seed, start - 1)

    for round_num in range(start, config.rounds + 1):
      t0 = time.monotonic()
      picked = sample_clients(len(client_ids), sampled_per_round,
                              config.seed, round_num)
      datasets, flops = [], []
      for index in picked:
        seed = shuffle_seed(config.seed, round_num, int(index))
        if feed:
          datasets.append(on_worker.train_descriptor(index, seed))
        else:
          x, y = data.client_arrays(client_ids[index])
          datasets.append(federated_data.make_client_dataset(
              x, y, batch_size=config.client.batch_size,
              epochs=config.client.epochs, shuffle_seed=seed))
        flops.append(config.client.epochs * data.client_size(
            client_ids[index]) * training.client_task.train_flops_per_example)
      # Who reports (faults/schedule.py); only they enter process.next.
      plan = fault_schedule.plan_round(
          faults, config.seed, round_num, picked,
          [config.client.epochs * data.client_size(client_ids[i])
           for i in picked], config.clients_per_round)
      outcome = fault_rounds.run_round(training, state, plan, datasets)
      state = outcome.state
      participations[picked] += 1
      row = {
          'round': round_num,
          'train_loss': outcome.train_metric('loss'),
          'train_accuracy': outcome.train_metric('accuracy'),
          'eval_loss': None,
          'eval_accuracy': None,
          'bytes_down': outcome.bytes_down,
          'bytes_up': outcome.bytes_up,
          'client_flops': float(np.mean(flops)),
          'epsilon': None,
          'clients': len(picked),
          'zeroed': outcome.zeroed,
          **fault_rounds.columns(plan),
      }
      if round_num % config.eval_every == 0 or round_num == config.rounds:
        eval_state = evaluation.set_model_weights(
            eval_state, process.get_model_weights(state))
        eval_out = evaluation.next(eval_state, eval_datasets)
        current = eval_out.metrics['client_work']['eval'][
            'current_round_metrics']
        row['eval_loss'] = float(current['loss'])
        row['eval_accuracy'] = float(current['accuracy'])
      row['round_seconds'] = time.monotonic() - t0
      # Privacy spent so far (outside the timed span: RDP accounting of
      # sampling without replacement takes ~0.3 s).
      row['epsilon'] = accountant.epsilon(round_num, participations)

      # CSV first, then the checkpoint: a crash in between re-runs this round.
      # SIGINT/SIGTERM wait until both are written.
      with _signals_deferred():
        metrics_csv.append(row)
        with tb_writer.as_default(step=round_num):
          for key, value in row.items():
            if key != 'round' and value is not None:
              tf.summary.scalar(key, value)
        tb_writer.flush()
        asyncio.run(state_manager.save(state, round_num))
      progress.round(row)
      if after_round is not None:
        after_round(round_num)

    final_weights = process.get_model_weights(state)

  np.savez(os.path.join(run_dir, 'final_weights.npz'),
           *_flat_weights(final_weights))
  rows = metrics_csv.read()
  summary = _summarize(config, task, rows,
                       client_params=training.client_task.num_params)
  summary.update(_privacy_summary(accountant, rows, participations))
  if faults.active:
    summary['faults'] = fault_rounds.summarize(rows)
  run_dir_lib.write_json(os.path.join(run_dir, 'summary.json'), summary)
  run_dir_lib.plot_curves(
      os.path.join(run_dir, 'metrics.csv'),
      os.path.join(run_dir, 'curves.png'),
      f'{config.name}: {config.model.name} on {config.data.name}')
  _print_summary(summary, out)
  return summary


def _summarize(config, task: task_lib.Task, rows: list[dict],
               client_params: int) -> dict:
  evals = [r for r in rows if r['eval_accuracy']]
  down = [int(r['bytes_down']) for r in rows]
  up = [int(r['bytes_up']) for r in rows]
  float_bytes = 4 * task.num_params  # one float32 model
  per_client_down = sum(down) / max(1, sum(int(r['clients']) for r in rows))
  per_client_up = sum(up) / max(1, sum(int(r['clients']) for r in rows))
  return {
      'config_name': config.name,
      'rounds': len(rows),
      'final_eval_accuracy': float(evals[-1]['eval_accuracy']) if evals else None,
      'final_eval_loss': float(evals[-1]['eval_loss']) if evals else None,
      'final_train_loss': next((float(r['train_loss']) for r in rows[::-1]
                                if r['train_loss']), None),
      'total_bytes_down': sum(down),
      'total_bytes_up': sum(up),
      'mean_bytes_down_per_client': per_client_down,
      'mean_bytes_up_per_client': per_client_up,
      'compression_down_vs_float32': float_bytes / per_client_down
                                     if per_client_down else None,
      'compression_up_vs_float32': float_bytes / per_client_up
                                   if per_client_up else None,
      'mean_client_flops': float(np.mean([float(r['client_flops'])
                                          for r in rows])) if rows else None,
      'model_params': task.num_params,
      'client_model_params': client_params,
      'epsilon': None,
      'total_round_seconds': sum(float(r['round_seconds']) for r in rows),
      'mean_round_seconds': float(np.mean([float(r['round_seconds'])
                                           for r in rows])) if rows else None,
  }


def participation_counts(num_clients: int, per_round: int, seed: int,
                         rounds: int) -> np.ndarray:
  """How many of rounds 1..`rounds` each client was sampled in."""
  counts = np.zeros(num_clients, np.int64)
  for r in range(1, rounds + 1):
    counts[sample_clients(num_clients, per_round, seed, r)] += 1
  return counts


def _privacy_summary(accountant: accounting.RunAccountant, rows: list[dict],
                     participations: np.ndarray) -> dict:
  """`epsilon` after the last round, what it means, and zeroed updates."""
  if accountant.mode == 'none' or not rows:
    return {}
  zeroed = [int(r['zeroed']) for r in rows if r.get('zeroed') not in (None, '')]
  return {
      'epsilon': float(rows[-1]['epsilon']),
      'privacy': accountant.statement(len(rows), participations),
      'zeroed_updates': sum(zeroed) if zeroed else None,
  }


def _print_summary(summary: dict, out: TextIO) -> None:
  acc = summary['final_eval_accuracy']
  print(
      f'done: {summary["rounds"]} rounds | final eval accuracy '
      f'{acc:.4f} loss {summary["final_eval_loss"]:.4f} | '
      f'{summary["total_bytes_down"] / 1e6:.1f} MB down, '
      f'{summary["total_bytes_up"] / 1e6:.1f} MB up | '
      f'{summary["mean_client_flops"] / 1e9:.3f} GFLOPs per client per round |'
      f' {summary["total_round_seconds"]:.1f} s of rounds',
      file=out, flush=True)
