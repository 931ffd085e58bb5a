"""Benchmark: cohort execution vs per-client execution vs TFF's FedAvg.

One round of K clients, three ways, same data, model, sampled clients and
runtime, alternating within each round so machine drift hits all:

* ``tff``: `tff.learning.algorithms.build_weighted_fed_avg`, one TFF client
  per client (datasets by `make_client_dataset`, as ours);
* ``ours``: our process with `runtime.cohort_size=1` (the default);
* ``cohort G``: `runtime.cohort_size=G`: K / G TFF clients, each training G
  clients in one batched computation (`tff_compress/cohorts/`).

A round's time includes building its datasets. Two more figures:

* the compute limit: FLOPs per second of a plain batched Keras training
  step on this machine (`tf.function`, SGD, one batch of all the round's
  examples, the same model), against which each mode's achieved
  ``examples × training FLOPs per example / round seconds`` is a fraction;
* peak memory of a cohort round: the peak resident set (VmHWM) of a fresh
  TFF worker that ran only cohort rounds, and of the driver.

  ./bazelw run //benchmarks:cohorts -- --config=configs/many_clients.py \\
      --clients=1000 --cohort_sizes=100,250,1000
  ./bazelw run //benchmarks:cohorts -- --config=configs/caldas_mnist.py \\
      --config_overrides=data.num_clients=100 --clients=100 \\
      --cohort_sizes=25,100
"""

from __future__ import annotations

import collections
import os
import statistics
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Before absl parses flags (see tff_compress/cli.py).
import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

_CONFIG = flags.DEFINE_string(
    'config', 'configs/many_clients.py', 'Config file (relative to workspace).')
_OVERRIDES = flags.DEFINE_list(
    'config_overrides', [], 'key=value config overrides (ints/floats/str).')
_CLIENTS = flags.DEFINE_integer('clients', 1000, 'Clients per round K.')
_SIZES = flags.DEFINE_list('cohort_sizes', ['100', '250', '1000'],
                           'Cohort sizes G to time (each must divide K).')
_BASELINES = flags.DEFINE_list('baselines', ['tff', 'ours'],
                               'Per-client modes to time: tff, ours.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed rounds per mode.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed rounds per mode.')


def _worker_peak_kib(parent: int) -> int:
  """Largest VmHWM (KiB) of the `worker_binary` children of `parent`."""
  peak = 0
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/cmdline', 'rb') as f:
        if b'worker_binary' not in f.read():
          continue
      with open(f'/proc/{name}/stat') as f:
        if int(f.read().rsplit(')', 1)[1].split()[1]) != parent:
          continue
      with open(f'/proc/{name}/status') as f:
        for line in f:
          if line.startswith('VmHWM:'):
            peak = max(peak, int(line.split()[1]))
    except (FileNotFoundError, ProcessLookupError, ValueError):
      continue
  return peak


def _own_peak_kib() -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1])
  return 0


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  import dataclasses
  from absl import logging
  import tensorflow_federated as tff

  from benchmarks import workspace
  from tff_compress import config_lib
  from tff_compress.cohorts import data as cohort_data
  from tff_compress.data import federated_data
  from tff_compress.data import registry as data_registry
  from tff_compress.fedavg import process as process_lib
  from tff_compress.fedavg import settings as fedavg_settings
  from tff_compress.learning import task as task_lib
  from tff_compress.program import sampling
  from tff_compress.runtime import local as local_runtime
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)

  cfg = workspace.load_config(_CONFIG.value, _OVERRIDES.value)
  k = _CLIENTS.value
  cfg.clients_per_round = k
  cfg = config_lib.validate(cfg)
  if cfg.server.optimizer != 'sgd' or cfg.client.momentum:
    raise app.UsageError('the TFF baseline here mirrors server.optimizer=sgd '
                         'and client.momentum=0 only')
  sizes = [int(g) for g in _SIZES.value]
  if any(g < 2 or k % g for g in sizes):
    raise app.UsageError(f'--cohort_sizes must be >= 2 and divide --clients '
                         f'{k}, got {_SIZES.value}')
  unknown = set(_BASELINES.value) - {'tff', 'ours'}
  if unknown:
    raise app.UsageError(f'unknown --baselines {sorted(unknown)}')

  settings = config_lib.settings(cfg)
  data = data_registry.build_federated_data(settings.data, seed=cfg.seed)
  if k > len(data.client_ids):
    raise app.UsageError(f'--clients={k} exceeds the data set\'s '
                         f'{len(data.client_ids)} clients')
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  ts = fedavg_settings.TrainingSettings.of(settings)
  c = ts.client
  procs = {}
  if 'tff' in _BASELINES.value:
    procs['tff'] = tff.learning.algorithms.build_weighted_fed_avg(
        task.model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(
            c.learning_rate),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(
            ts.server.learning_rate, momentum=ts.server.momentum or None))
  if 'ours' in _BASELINES.value:
    procs['ours'] = process_lib.build_training(
        dataclasses.replace(ts, cohort_size=1), task).process
  for g in sizes:
    procs[f'cohort {g}'] = process_lib.build_training(
        dataclasses.replace(ts, cohort_size=g), task).process

  def sampled(round_num):
    picked = sampling.sample_clients(len(data.client_ids), k, cfg.seed,
                                     round_num)
    return [(*data.client_arrays(data.client_ids[i]),
             sampling.shuffle_seed(cfg.seed, round_num, int(i)))
            for i in picked]

  def feed(name, clients):
    if name.startswith('cohort'):
      g = int(name.split()[1])
      return [cohort_data.cohort_dataset(clients[a:a + g],
                                         batch_size=c.batch_size,
                                         epochs=c.epochs)
              for a in range(0, len(clients), g)]
    return [federated_data.make_client_dataset(
        x, y, batch_size=c.batch_size, epochs=c.epochs, shuffle_seed=s)
            for x, y, s in clients]

  examples = None
  times = collections.defaultdict(list)
  total = _WARMUP.value + _ROUNDS.value
  with local_runtime.local_context():
    states = {name: p.initialize() for name, p in procs.items()}
    for r in range(1, total + 1):
      clients = sampled(r)
      examples = c.epochs * sum(len(y) for _, y, _ in clients)
      order = list(procs) if r % 2 else list(reversed(procs))
      for name in order:
        t0 = time.perf_counter()
        states[name] = procs[name].next(states[name],
                                        feed(name, clients)).state
        if r > _WARMUP.value:
          times[name].append(time.perf_counter() - t0)
        print(f'round {r} {name}: {time.perf_counter() - t0:.3f} s',
              flush=True)

  # The compute limit: one plain batched training step on all the last
  # round's examples.
  model = task.keras_model_fn()
  optimizer = tf.keras.optimizers.SGD(c.learning_rate)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  last = sampled(total)
  x = tf.constant(np.concatenate([a for a, _, _ in last]))
  y = tf.constant(np.concatenate([b for _, b, _ in last]))

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  train_step()
  steps = []
  for _ in range(5):
    t0 = time.perf_counter()
    float(train_step())
    steps.append(time.perf_counter() - t0)
  limit = x.shape[0] * task.train_flops_per_example / statistics.median(steps)

  # Peak memory: a fresh worker running the largest cohort only.
  peaks = {}
  for g in sizes:
    name = f'cohort {g}'
    with local_runtime.local_context():
      state = procs[name].initialize()
      for r in (1, 2):
        state = procs[name].next(state, feed(name, sampled(r))).state
      peaks[g] = _worker_peak_kib(os.getpid())

  flops = examples * task.train_flops_per_example
  print(f'\nconfig {cfg.name}: {cfg.model.name} on {data.name}, {k} clients '
        f'per round, {examples} examples per round, batch {c.batch_size}, '
        f'{c.epochs} epoch(s); {_ROUNDS.value} timed rounds ({_WARMUP.value} '
        'warm-up), medians')
  print(f'compute limit (plain batched Keras step, {x.shape[0]} examples): '
        f'{limit / 1e9:.2f} GFLOP/s')
  base = statistics.median(times['tff']) if 'tff' in times else None
  print(f'{"mode":<12} {"s/round":>8} {"clients/s":>10} {"vs tff":>7} '
        f'{"GFLOP/s":>8} {"of limit":>8} {"worker peak":>12}')
  for name in procs:
    s = statistics.median(times[name])
    g = int(name.split()[1]) if name.startswith('cohort') else None
    peak = f'{peaks[g] / 1024:.0f} MiB' if g else ''
    vs = f'{base / s:6.1f}x' if base else '   n/a'
    print(f'{name:<12} {s:8.3f} {k / s:10.0f} {vs:>7} '
          f'{flops / s / 1e9:8.3f} {flops / s / limit:8.1%} {peak:>12}')
  print(f'driver peak RSS: {_own_peak_kib() / 1024:.0f} MiB')


if __name__ == '__main__':
  app.run(main)
