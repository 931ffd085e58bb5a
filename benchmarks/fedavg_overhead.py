"""Benchmark: our composed FedAvg vs TFF's `build_weighted_fed_avg`.

Same data, model, sampled clients, seeds and runtime; rounds alternate
between the two processes so machine drift hits both equally.

  ./bazelw run //benchmarks:fedavg_overhead -- --rounds=20

With ``--clients=50,200,1000`` it measures the many-small-clients regime
instead (configs/many_clients.py: dense model, 4 examples per client), as
milliseconds per client for each number of clients per round:

  ./bazelw run //benchmarks:fedavg_overhead -- \
      --config=configs/many_clients.py --clients=50,200,1000 --rounds=5

* ``round``: what a round costs the driver, building the sampled clients'
  datasets included. Ours builds them with `make_client_dataset` (as
  simulate does); TFF's with its tutorials' recipe,
  ``from_tensor_slices((x, y)).shuffle(n, seed).repeat(epochs).batch(B)``,
  from the same arrays.
* ``next``: ``process.next`` alone, both processes fed the same datasets.
* ``data``: dataset construction alone, ours and TFF's recipe, and the
  in-graph gather that `make_client_dataset` used before (for the record).

Every figure is a median over the timed rounds; ratios compare medians.
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
import tensorflow as tf  # pylint: disable=wrong-import-position

_CONFIG = flags.DEFINE_string(
    'config', 'configs/caldas_mnist.py', 'Config file (relative to workspace).')
_ROUNDS = flags.DEFINE_integer('rounds', 20, 'Timed rounds per process.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed rounds per process.')
_CLIENTS = flags.DEFINE_list(
    'clients', [],
    'Clients per round to measure in ms per client (e.g. 50,200,1000); '
    'empty: compare round times at the config\'s clients_per_round.')


def _tff_recipe_dataset(x, y, *, batch_size: int, epochs: int, seed: int):
  """A client dataset as TFF's tutorials build one (shuffle, repeat, batch)."""
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).shuffle(
          len(y), seed=seed).repeat(epochs).batch(batch_size)


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from absl import logging
  import tensorflow_federated as tff

  from benchmarks import workspace
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

  cfg = config_lib.validate(workspace.load_config(_CONFIG.value))
  if cfg.server.optimizer != 'sgd' or cfg.client.momentum:
    raise app.UsageError('the TFF baseline here mirrors server.optimizer=sgd '
                         'and client.momentum=0 only')
  per_round = [int(k) for k in _CLIENTS.value]
  if any(k < 1 or k > cfg.data.num_clients for k in per_round):
    raise app.UsageError(f'--clients must lie in 1..data.num_clients '
                         f'({cfg.data.num_clients}), got {_CLIENTS.value}')

  settings = config_lib.settings(cfg)
  data = data_registry.build_federated_data(settings.data, seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  ours = process_lib.build_learning_process(
      fedavg_settings.TrainingSettings.of(settings), task)
  theirs = tff.learning.algorithms.build_weighted_fed_avg(
      task.model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          cfg.client.learning_rate),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(
          cfg.server.learning_rate, momentum=cfg.server.momentum or None))
  procs = {'ours': ours, 'tff': theirs}
  evaluation = process_lib.build_evaluation(task)
  eval_ds = [federated_data.make_client_dataset(
      data.test_x, data.test_y, batch_size=100, epochs=1, shuffle_seed=0)]

  def sampled(round_num, k):
    picked = sampling.sample_clients(
        len(data.client_ids), k, cfg.seed, round_num)
    return [(data.client_arrays(data.client_ids[i]),
             sampling.shuffle_seed(cfg.seed, round_num, int(i)))
            for i in picked]

  def ours_datasets(clients):
    return [federated_data.make_client_dataset(
        x, y, batch_size=cfg.client.batch_size, epochs=cfg.client.epochs,
        shuffle_seed=seed) for (x, y), seed in clients]

  def tff_datasets(clients):
    return [_tff_recipe_dataset(x, y, batch_size=cfg.client.batch_size,
                                epochs=cfg.client.epochs, seed=seed)
            for (x, y), seed in clients]

  def in_graph_datasets(clients):
    # make_client_dataset before it gathered rows in numpy.
    return [federated_data.batches_in_order(
        x, y, federated_data.client_order(len(y), cfg.client.epochs, seed),
        cfg.client.batch_size) for (x, y), seed in clients]

  def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0

  def final_accuracy(states):
    out = {}
    for name, proc in procs.items():
      es = evaluation.set_model_weights(
          evaluation.initialize(), proc.get_model_weights(states[name]))
      m = evaluation.next(es, eval_ds).metrics['client_work']['eval'][
          'current_round_metrics']
      out[name] = float(m['accuracy'])
    return out

  total = _WARMUP.value + _ROUNDS.value
  with local_runtime.local_context():
    if not per_round:
      times = collections.defaultdict(list)
      states = {name: proc.initialize() for name, proc in procs.items()}
      for r in range(1, total + 1):
        datasets = ours_datasets(sampled(r, cfg.clients_per_round))
        order = ('ours', 'tff') if r % 2 else ('tff', 'ours')
        for name in order:
          output, seconds = timed(procs[name].next, states[name], datasets)
          states[name] = output.state
          if r > _WARMUP.value:
            times[name].append(seconds)
      accuracy = final_accuracy(states)
      print(f'config {cfg.name}: {cfg.model.name}, {cfg.clients_per_round} '
            f'clients/round, {total} rounds ({_WARMUP.value} warm-up)')
      print(f'{"process":<8} {"median s":>9} {"mean s":>8} {"final acc":>10}')
      for name in ('ours', 'tff'):
        print(f'{name:<8} {statistics.median(times[name]):9.3f} '
              f'{statistics.mean(times[name]):8.3f} {accuracy[name]:10.4f}')
      ratio = statistics.median(times['ours']) / statistics.median(
          times['tff'])
      print(f'round time ratio ours/tff (median): {ratio:.3f}')
      return

    print(f'config {cfg.name}: {cfg.model.name} on {data.name}, '
          f'{len(data.client_ids)} clients, mean '
          f'{data.sizes().mean():.1f} examples, batch {cfg.client.batch_size}'
          f', {cfg.client.epochs} epoch(s); {total} rounds per size '
          f'({_WARMUP.value} warm-up); ms per client, medians')
    header = (f'{"clients":>7} | {"data ours":>9} {"data tff":>8} '
              f'{"in-graph":>8} | {"next ours":>9} {"next tff":>8} '
              f'{"ratio":>5} | {"round ours":>10} {"round tff":>9} '
              f'{"ratio":>5}')
    print(header)
    for k in per_round:
      times = collections.defaultdict(list)
      states = {name: proc.initialize() for name, proc in procs.items()}
      for r in range(1, total + 1):
        clients = sampled(r, k)
        built = {}
        built['ours'], t_ours = timed(ours_datasets, clients)
        built['tff'], t_tff = timed(tff_datasets, clients)
        _, t_graph = timed(in_graph_datasets, clients)
        # Same datasets for `next`; each round's own datasets for `round`.
        feeds = [('next', 'ours'), ('next', 'tff'), ('round', 'ours'),
                 ('round', 'tff')]
        if r % 2 == 0:
          feeds.reverse()
        for kind, name in feeds:
          datasets = built[name] if kind == 'round' else built['ours']
          output, seconds = timed(procs[name].next, states[name], datasets)
          states[name] = output.state
          if r > _WARMUP.value:
            build = {'ours': t_ours, 'tff': t_tff}[name]
            times[f'{kind} {name}'].append(
                seconds + (build if kind == 'round' else 0.0))
        if r > _WARMUP.value:
          times['data ours'].append(t_ours)
          times['data tff'].append(t_tff)
          times['in-graph'].append(t_graph)
      ms = {key: 1000 * statistics.median(v) / k for key, v in times.items()}
      print(f'{k:>7} | {ms["data ours"]:9.2f} {ms["data tff"]:8.2f} '
            f'{ms["in-graph"]:8.2f} | {ms["next ours"]:9.2f} '
            f'{ms["next tff"]:8.2f} {ms["next ours"] / ms["next tff"]:5.2f} | '
            f'{ms["round ours"]:10.2f} {ms["round tff"]:9.2f} '
            f'{ms["round ours"] / ms["round tff"]:5.2f}', flush=True)


if __name__ == '__main__':
  app.run(main)
