"""Benchmark: local DP-SGD round time vs plain local SGD.

Two learning processes built from the same config, one with
`dp.mode=sample` (per-microbatch gradients, clip, Gaussian noise) and one
without; same sampled clients and datasets each round, rounds alternating
between the two so machine drift hits both equally. Reports the median
round time of each and their ratio.

  ./bazelw run //benchmarks:dpsgd_overhead -- --model=dense --rounds=10
  ./bazelw run //benchmarks:dpsgd_overhead -- --model=caldas_cnn --rounds=4
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
import tensorflow as tf  # pylint: disable=unused-import,wrong-import-position

_MODEL = flags.DEFINE_string('model', 'dense', 'model.name.')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Timed rounds per process.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed rounds per process.')
_MICROBATCHES = flags.DEFINE_list(
    'microbatches', ['0', '4'], 'dp.microbatches values (0 = per example).')


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from absl import logging
  from tff_compress import config_lib
  from tff_compress.data import federated_data
  from tff_compress.data import registry as data_registry
  from tff_compress.fedavg import process as process_lib
  from tff_compress.fedavg import settings as fedavg_settings
  from tff_compress.learning import task as task_lib
  from tff_compress.program import sampling
  from tff_compress.runtime import local as local_runtime
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)

  cfg = config_lib.default_config()
  cfg.model.name = _MODEL.value
  cfg = config_lib.validate(cfg)
  data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  procs = {'sgd': process_lib.build_learning_process(
      fedavg_settings.TrainingSettings.of(config_lib.settings(cfg)), task)}
  for m in _MICROBATCHES.value:
    dp_cfg = config_lib.default_config()
    dp_cfg.model.name = _MODEL.value
    dp_cfg.dp.mode = 'sample'
    dp_cfg.dp.microbatches = int(m)
    dp_cfg = config_lib.validate(dp_cfg)
    name = f'dpsgd m={int(m) or cfg.client.batch_size}'
    procs[name] = process_lib.build_learning_process(
        fedavg_settings.TrainingSettings.of(config_lib.settings(dp_cfg)),
        task)

  def client_data(round_num):
    picked = sampling.sample_clients(
        len(data.client_ids), cfg.clients_per_round, cfg.seed, round_num)
    out = []
    for i in picked:
      x, y = data.client_arrays(data.client_ids[i])
      out.append(federated_data.make_client_dataset(
          x, y, batch_size=cfg.client.batch_size, epochs=cfg.client.epochs,
          shuffle_seed=sampling.shuffle_seed(cfg.seed, round_num, int(i))))
    return out, sum(data.client_size(data.client_ids[i]) for i in picked)

  times = collections.defaultdict(list)
  names = list(procs)
  with local_runtime.local_context():
    states = {n: p.initialize() for n, p in procs.items()}
    examples = 0
    for r in range(1, _WARMUP.value + _ROUNDS.value + 1):
      datasets, n_examples = client_data(r)
      order = names[r % len(names):] + names[:r % len(names)]
      for name in order:
        t0 = time.perf_counter()
        states[name] = procs[name].next(states[name], datasets).state
        if r > _WARMUP.value:
          times[name].append(time.perf_counter() - t0)
      if r > _WARMUP.value:
        examples += n_examples

  print(f'model {cfg.model.name} ({task.num_params:,} params), '
        f'{cfg.clients_per_round} clients/round, batch '
        f'{cfg.client.batch_size}, {_ROUNDS.value} timed rounds '
        f'({examples / _ROUNDS.value:.0f} examples/round)')
  print('| client work | median s/round | mean s/round | ratio vs sgd |')
  print('|---|---|---|---|')
  base = statistics.median(times['sgd'])
  for name in names:
    med = statistics.median(times[name])
    print(f'| {name} | {med:.3f} | {statistics.mean(times[name]):.3f} | '
          f'{med / base:.2f} |')


if __name__ == '__main__':
  app.run(main)
