"""Benchmark: remote TFF workers on loopback vs the local context.

1. Driver bytes per round. The same rounds are fed two ways through 1 and 2
   loopback workers: shipped datasets (what the local context and a naive
   remote run send) and client descriptors (the workers build the data).
   Bytes are the serialized sizes of every gRPC request/response message the
   driver exchanged (`runtime.remote.Cluster.bytes_sent/received`, protobuf
   `ByteSize()`, no HTTP/2 framing), plus the serialized client-data
   argument alone (`value_serialization.serialize_value`).
2. Round time. `simulate_lib.run` of the same config with the local context,
   1 and 2 loopback workers; median `round_seconds` of the rounds without
   compilation (round 1) or evaluation (the last).

  ./bazelw run //benchmarks:remote_workers -- --rounds=8
  ./bazelw run //benchmarks:remote_workers -- --config=configs/dp_scale.py

With cohort execution (`runtime.cohort_size`) the two ways are the stacked
cohort steps and the cohort descriptors.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Before absl parses flags (see tff_compress/cli.py).
import tensorflow as tf  # pylint: disable=unused-import,wrong-import-position

_CONFIG = flags.DEFINE_string(
    'config', 'configs/caldas_mnist.py', 'Config file (relative to workspace).')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 8, 'Rounds per timed run (round 1 and the last are not timed).')
_BYTE_ROUNDS = flags.DEFINE_integer('byte_rounds', 3,
                                    'Rounds fed both ways for the bytes.')
_OUT = flags.DEFINE_string('out', '', 'Optional JSON file for the results.')


def _serialized_bytes(values, type_spec) -> int:
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executors import value_serialization
  # pylint: enable=g-import-not-at-top
  return sum(value_serialization.serialize_value(v, type_spec)[0].ByteSize()
             for v in values)


def _cohort_inputs(data, picked, seeds, size, client):
  """A cohort round's inputs both ways: stacked steps and descriptors."""
  # pylint: disable=g-import-not-at-top
  from tff_compress.cohorts import data as cohort_data
  from tff_compress.data import store as store_lib
  # pylint: enable=g-import-not-at-top
  datasets, descriptors = [], []
  for slots in cohort_data.group(
      [data.client_size(data.client_ids[i]) for i in picked], size):
    indices, cohort_seeds = [int(picked[j]) for j in slots], [
        seeds[j] for j in slots]
    datasets.append(cohort_data.cohort_dataset(
        [(*data.client_arrays(data.client_ids[i]), s)
         for i, s in zip(indices, cohort_seeds)],
        batch_size=client.batch_size, epochs=client.epochs, slots=slots))
    descriptors.append(store_lib.cohort_descriptor(indices, cohort_seeds,
                                                   slots))
  return datasets, descriptors


def measure_bytes(cfg, data_dir, workers, rounds):
  """Driver bytes per round, shipped datasets vs descriptors."""
  # pylint: disable=g-import-not-at-top
  from tff_compress import config_lib
  from tff_compress.data import federated_data
  from tff_compress.data import registry as data_registry
  from tff_compress.data import store as store_lib
  from tff_compress.fedavg import process as process_lib
  from tff_compress.fedavg import settings as fedavg_settings
  from tff_compress.learning import task as task_lib
  from tff_compress.program import sampling
  from tff_compress.runtime import feed as feed_lib
  from tff_compress.runtime import remote
  # pylint: enable=g-import-not-at-top
  data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  training = process_lib.build_training(
      fedavg_settings.TrainingSettings.of(config_lib.settings(cfg)), task)
  evaluation = process_lib.build_evaluation(task)
  store = store_lib.prepare_store(data, data_dir)
  client_type = training.process.next.type_signature.parameter[1].member
  results = {}
  for k in (1, 2):
    with remote.remote_context([w.target for w in workers[:k]]) as cluster:
      feed_lib.check_workers(cluster, store)
      feed = feed_lib.WorkerFeed.build(
          training, evaluation, store, batch_size=cfg.client.batch_size,
          epochs=cfg.client.epochs, eval_clients=cfg.eval_clients,
          eval_batch_size=100)
      state = training.process.initialize()
      rows = {'datasets': [], 'ids': []}
      for r in range(1, rounds + 1):
        picked = sampling.sample_clients(
            len(data.client_ids), cfg.clients_per_round, cfg.seed, r)
        seeds = [sampling.shuffle_seed(cfg.seed, r, int(i))
                 for i in picked]
        if training.cohort_size > 1:  # stacked cohorts vs cohort descriptors
          datasets, descriptors = _cohort_inputs(
              data, picked, seeds, training.cohort_size, cfg.client)
          ways = {'datasets': (training.process.next, datasets),
                  'ids': (feed.training.process.next, descriptors)}
        else:
          datasets = []
          for i, seed in zip(picked, seeds):
            x, y = data.client_arrays(data.client_ids[i])
            datasets.append(federated_data.make_client_dataset(
                x, y, batch_size=cfg.client.batch_size,
                epochs=cfg.client.epochs, shuffle_seed=seed))
          descriptors = [store_lib.train_descriptor(i, s)
                         for i, s in zip(picked, seeds)]
          ways = {
              'datasets': (training.process.next,
                           training.client_inputs(datasets)),
              'ids': (feed.training.process.next,
                      feed.training.client_inputs(descriptors)),
          }
        desc_type = (feed.training.process.next_computation.type_signature
                     .parameter[1].member)
        arg_bytes = {
            'datasets': _serialized_bytes(ways['datasets'][1], client_type),
            'ids': _serialized_bytes(ways['ids'][1], desc_type),
        }
        outputs = {}
        for way, (next_fn, client_data) in ways.items():
          sent, received = cluster.bytes_sent(), cluster.bytes_received()
          t0 = time.monotonic()
          outputs[way] = next_fn(state, client_data)
          rows[way].append({
              'sent': cluster.bytes_sent() - sent,
              'received': cluster.bytes_received() - received,
              'client_data_arg': arg_bytes[way],
              'seconds': time.monotonic() - t0,
          })
        loss = [float(o.metrics['client_work']['train']['loss'])
                for o in outputs.values()]
        print(f'{k} worker(s) round {r}: train loss datasets {loss[0]:.6f} '
              f'ids {loss[1]:.6f}', flush=True)
        state = outputs['ids'].state
      # Round 1 also compiles; report the mean of the later rounds.
      later = {way: v[1:] or v for way, v in rows.items()}
      results[f'{k}_workers'] = {
          way: {key: statistics.mean(row[key] for row in v)
                for key in ('sent', 'received', 'client_data_arg')}
          for way, v in later.items()}
  return results


def _round_seconds(run_dir):
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  timed = [float(r['round_seconds']) for r in rows[1:-1]]
  return statistics.median(timed), timed


def measure_time(cfg, data_dir, workers, tmp):
  """Median round seconds: local context, 1 and 2 loopback workers."""
  # pylint: disable=g-import-not-at-top
  import io
  from benchmarks import workspace
  from tff_compress import config_lib
  from tff_compress import simulate_lib
  # pylint: enable=g-import-not-at-top
  results = {}
  for name, k in (('local', 0), ('1_worker', 1), ('2_workers', 2)):
    run_cfg = config_lib.validate(workspace.load_config(_CONFIG.value))
    run_cfg.rounds = _ROUNDS.value
    run_cfg.eval_every = _ROUNDS.value
    run_cfg.runtime.workers = ','.join(w.target for w in workers[:k])
    run_cfg.runtime.worker_data_dir = data_dir
    run_dir = os.path.join(tmp, name)
    t0 = time.monotonic()
    simulate_lib.run(run_cfg, run_dir, out=io.StringIO())
    median, timed = _round_seconds(run_dir)
    results[name] = {'median_round_seconds': median, 'rounds': timed,
                     'wall_seconds': time.monotonic() - t0}
    print(f'{name}: median round {median:.2f} s over {len(timed)} rounds',
          flush=True)
  base = results['local']['median_round_seconds']
  for r in results.values():
    r['vs_local'] = r['median_round_seconds'] / base
  return results


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from absl import logging
  from benchmarks import workspace
  from tff_compress import config_lib
  from tff_compress.runtime import local as local_runtime
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  cfg = config_lib.validate(workspace.load_config(_CONFIG.value))
  tmp = tempfile.mkdtemp(prefix='remote_workers_')
  data_dir = os.path.join(tmp, 'worker_data')
  os.makedirs(data_dir)
  local_runtime.install_exit_handlers()
  workers = [local_runtime.LocalWorker(cwd=data_dir,
                                       log_path=os.path.join(tmp, f'w{i}.log'))
             for i in range(2)]
  try:
    results = {
        'config': _CONFIG.value,
        'clients_per_round': cfg.clients_per_round,
        'cpus': os.cpu_count(),
        'bytes_per_round': measure_bytes(cfg, data_dir, workers,
                                         _BYTE_ROUNDS.value),
        'round_time': measure_time(cfg, data_dir, workers, tmp),
    }
  finally:
    for w in workers:
      w.stop()
  print(json.dumps(results, indent=1))
  if _OUT.value:
    with open(workspace.path(_OUT.value), 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
