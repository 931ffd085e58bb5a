"""Benchmark: our composed FedAvg vs TFF's `build_weighted_fed_avg`.

Same data, model, sampled clients, seeds and runtime; rounds alternate
between the two processes so machine drift hits both equally.

  ./bazelw run //benchmarks:fedavg_overhead -- --rounds=20
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

_CONFIG = flags.DEFINE_string(
    'config', 'configs/caldas_mnist.py', 'Config file (relative to workspace).')
_ROUNDS = flags.DEFINE_integer('rounds', 20, 'Timed rounds per process.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed rounds per process.')


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from absl import logging
  import numpy as np
  import tensorflow_federated as tff

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

  path = _CONFIG.value
  if not os.path.isabs(path):
    path = os.path.join(os.environ.get('BUILD_WORKSPACE_DIRECTORY', '.'), path)
  cfg = config_lib.validate(config_lib.load_config_file(path))

  data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  ours = process_lib.build_learning_process(
      fedavg_settings.TrainingSettings.of(config_lib.settings(cfg)), task)
  theirs = tff.learning.algorithms.build_weighted_fed_avg(
      task.model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          cfg.client.learning_rate),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(
          cfg.server.learning_rate, momentum=cfg.server.momentum or None))
  if cfg.server.optimizer != 'sgd' or cfg.client.momentum:
    raise app.UsageError('the TFF baseline here mirrors server.optimizer=sgd '
                         'and client.momentum=0 only')
  evaluation = process_lib.build_evaluation(task)
  eval_ds = [federated_data.make_client_dataset(
      data.test_x, data.test_y, batch_size=100, epochs=1, shuffle_seed=0)]

  def client_data(round_num):
    picked = sampling.sample_clients(
        len(data.client_ids), cfg.clients_per_round, cfg.seed, round_num)
    out = []
    for i in picked:
      x, y = data.client_arrays(data.client_ids[i])
      out.append(federated_data.make_client_dataset(
          x, y, batch_size=cfg.client.batch_size, epochs=cfg.client.epochs,
          shuffle_seed=sampling.shuffle_seed(cfg.seed, round_num, int(i))))
    return out

  times = collections.defaultdict(list)
  with local_runtime.local_context():
    states = {'ours': ours.initialize(), 'tff': theirs.initialize()}
    procs = {'ours': ours, 'tff': theirs}
    total = _WARMUP.value + _ROUNDS.value
    for r in range(1, total + 1):
      datasets = client_data(r)
      order = ('ours', 'tff') if r % 2 else ('tff', 'ours')
      for name in order:
        t0 = time.perf_counter()
        states[name] = procs[name].next(states[name], datasets).state
        if r > _WARMUP.value:
          times[name].append(time.perf_counter() - t0)
    accuracy = {}
    for name in procs:
      es = evaluation.set_model_weights(
          evaluation.initialize(), procs[name].get_model_weights(states[name]))
      m = evaluation.next(es, eval_ds).metrics['client_work']['eval'][
          'current_round_metrics']
      accuracy[name] = float(m['accuracy'])

  print(f'config {cfg.name}: {cfg.model.name}, {cfg.clients_per_round} '
        f'clients/round, {total} rounds ({_WARMUP.value} warm-up)')
  print(f'{"process":<8} {"median s":>9} {"mean s":>8} {"final acc":>10}')
  for name in ('ours', 'tff'):
    print(f'{name:<8} {statistics.median(times[name]):9.3f} '
          f'{statistics.mean(times[name]):8.3f} {accuracy[name]:10.4f}')
  ratio = statistics.median(times['ours']) / statistics.median(times['tff'])
  print(f'round time ratio ours/tff (median): {ratio:.3f}')


if __name__ == '__main__':
  app.run(main)
