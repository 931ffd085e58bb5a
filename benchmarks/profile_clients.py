"""Where a round's per-client cost goes, stage by stage (ms per client).

  ./bazelw run //benchmarks:profile_clients -- \
      --config=configs/many_clients.py --clients=50,200 --repeats=5
  ./bazelw run //benchmarks:profile_clients -- --model=logistic

For each number of clients K, every stage below runs `repeats` times on the
same K sampled clients, the stages in a rotating order so that machine drift
hits them alike; each figure is the median time divided by K.

Driver (Python):

* ``dataset``: building the K client datasets with `make_client_dataset`;
* ``dataset, in-graph``: the previous construction (`batches_in_order`, a
  traced ``Dataset.map`` per client);
* ``serialize``: TFF turning the K datasets into the values it sends to its
  C++ worker (`value_serialization.serialize_value`).

TFF C++ worker (a computation's wall time, its serialization included):

* ``map, no-op``: ``federated_map`` of a TF computation over K int32 client
  values: the fixed cost of one per-client call in the runtime;
* ``map, dataset``: ``federated_map`` of one pass over each client's
  dataset: ingesting a dataset;
* ``broadcast + map, bytes``: our distributor alone: broadcast of the
  model + ``federated_map`` of its byte count + ``federated_sum``;
* ``client work``: broadcast + local training + sum of the client weights;
* ``next, tff``, ``next, ours``, ``next, ours w/o bytes_down``,
  ``next, ours w/o bytes_up``, ``next, ours w/o both``: whole rounds.

TensorFlow floor (no TFF): ``compute, one graph``: the same local training
(one SGD step from the same weights per client, summed weighted deltas) of
all K clients inside one ``tf.function`` call; shown only when every client
fits one batch and ``client.epochs = 1`` (the many-small-clients shape).
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
    'config', 'configs/many_clients.py', 'Config file (relative to workspace).')
_CLIENTS = flags.DEFINE_list('clients', ['50', '200'],
                             'Numbers of clients per round to profile.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repetitions per stage.')
_MODEL = flags.DEFINE_string(
    'model', '', 'model.name to profile instead of the config\'s (e.g. '
    'logistic vs dense: does the per-client cost depend on the model?).')


def _one_graph_training(keras_model_fn, learning_rate: float):
  """All clients' one-step local SGD in one traced call.

  Returns ``fn(x [K, b, ...], y [K, b], counts [K]) -> sum_k n_k * delta_k``
  with ``delta_k = -lr * grad L_k(w0)`` (the model delta of one SGD step on
  client k's single batch; padded rows beyond ``n_k`` are masked out).
  """
  model = keras_model_fn()
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True, reduction='none')
  weights = model.trainable_variables

  @tf.function
  def train(x, y, counts):
    def body(k, total):
      mask = tf.sequence_mask(counts[k], tf.shape(y)[1], tf.float32)
      with tf.GradientTape() as tape:
        losses = loss_fn(y[k], model(x[k], training=True))
        loss = tf.reduce_sum(losses * mask) / tf.reduce_sum(mask)
      grads = tape.gradient(loss, weights)
      n = tf.cast(counts[k], tf.float32)
      return k + 1, [t - learning_rate * n * g for t, g in zip(total, grads)]

    zeros = [tf.zeros_like(w) for w in weights]
    _, total = tf.while_loop(lambda k, _: k < tf.shape(x)[0], body,
                             (tf.constant(0), zeros))
    return total

  return train


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from absl import logging
  import numpy as np
  import tensorflow_federated as tff
  from tensorflow_federated.python.core.impl.executors import value_serialization  # pylint: disable=line-too-long

  from benchmarks import workspace
  from tff_compress import config_lib
  from tff_compress.data import federated_data
  from tff_compress.data import registry as data_registry
  from tff_compress.fedavg import process as process_lib
  from tff_compress.fedavg import registry
  from tff_compress.fedavg import settings as fedavg_settings
  from tff_compress.learning import aggregators
  from tff_compress.learning import distributors
  from tff_compress.learning import task as task_lib
  from tff_compress.program import sampling
  from tff_compress.runtime import local as local_runtime
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)

  cfg = workspace.load_config(_CONFIG.value)
  if _MODEL.value:
    cfg.model.name = _MODEL.value
  cfg = config_lib.validate(cfg)
  if cfg.server.optimizer != 'sgd' or cfg.client.momentum:
    raise app.UsageError('the TFF baseline here mirrors server.optimizer=sgd '
                         'and client.momentum=0 only')
  per_round = [int(k) for k in _CLIENTS.value]
  if any(k < 1 or k > cfg.data.num_clients for k in per_round):
    raise app.UsageError(f'--clients must lie in 1..data.num_clients '
                         f'({cfg.data.num_clients}), got {_CLIENTS.value}')

  settings = config_lib.settings(cfg)
  ts = fedavg_settings.TrainingSettings.of(settings)
  data = data_registry.build_federated_data(settings.data, seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  initial = process_lib.build_initial_weights_fn(task)
  weights_type = initial.type_signature.result
  sequence_type = tff.SequenceType(tff.types.tensorflow_to_type(
      task.input_spec))

  def compose(distributor, aggregation_factory):
    return tff.learning.templates.compose_learning_process(
        initial, distributor,
        registry.build_client_work(ts, task, weights_type),
        aggregation_factory.create(weights_type.trainable,
                                   tff.TensorType(np.float32)),
        tff.learning.templates.build_apply_optimizer_finalizer(
            registry.build_server_optimizer(ts.server), weights_type))

  plain = tff.learning.templates.build_broadcast_process(weights_type)
  processes = {
      'next, tff': tff.learning.algorithms.build_weighted_fed_avg(
          task.model_fn,
          client_optimizer_fn=tff.learning.optimizers.build_sgdm(
              cfg.client.learning_rate),
          server_optimizer_fn=tff.learning.optimizers.build_sgdm(
              cfg.server.learning_rate,
              momentum=cfg.server.momentum or None)),
      'next, ours': process_lib.build_training(ts, task).process,
      'next, ours w/o bytes_down': compose(plain, aggregators.build_mean()),
      'next, ours w/o bytes_up': compose(
          distributors.build_plain_broadcast(weights_type),
          tff.aggregators.MeanFactory()),
      'next, ours w/o both': compose(plain, tff.aggregators.MeanFactory()),
  }

  @tff.tensorflow.computation(np.int32)
  def plus_one(v):
    return v + 1

  @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
  def map_noop(values):
    return tff.federated_map(plus_one, values)

  @tff.tensorflow.computation(sequence_type)
  def label_sum(ds):
    return ds.reduce(tf.constant(0, tf.int32),
                     lambda acc, batch: acc + tf.reduce_sum(batch['y']))

  @tff.federated_computation(tff.FederatedType(sequence_type, tff.CLIENTS))
  def map_dataset(datasets):
    return tff.federated_sum(tff.federated_map(label_sum, datasets))

  bytes_of = distributors.build_plain_broadcast(weights_type)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(np.int32, tff.CLIENTS))
  def map_bytes(weights, clients):
    del clients  # Only sets the number of clients the broadcast reaches.
    return bytes_of.next(bytes_of.initialize(), weights).measurements

  client_work = registry.build_client_work(ts, task, weights_type)

  @tff.federated_computation(
      client_work.initialize.type_signature.result,
      tff.FederatedType(weights_type, tff.SERVER),
      tff.FederatedType(sequence_type, tff.CLIENTS))
  def run_client_work(state, weights, datasets):
    out = client_work.next(state, tff.federated_broadcast(weights), datasets)
    return tff.federated_sum(out.result.update_weight)

  one_batch = (cfg.client.epochs == 1 and
               int(data.sizes().max()) <= cfg.client.batch_size)
  one_graph = (_one_graph_training(task.keras_model_fn,
                                   cfg.client.learning_rate)
               if one_batch else None)

  print(f'config {cfg.name}: {cfg.model.name} on {data.name} '
        f'({task.num_params:,} params, '
        f'{task.train_flops_per_example / 1e6:.3f} MFLOPs/example to train), '
        f'{len(data.client_ids)} clients of mean {data.sizes().mean():.1f} '
        f'examples, batch {cfg.client.batch_size}, {cfg.client.epochs} '
        f'epoch(s); median of {_REPEATS.value} runs, ms per client')
  with local_runtime.local_context():
    weights = initial()
    cw_state = client_work.initialize()
    states = {name: p.initialize() for name, p in processes.items()}
    for k in per_round:
      picked = sampling.sample_clients(len(data.client_ids), k, cfg.seed, 1)
      arrays = [data.client_arrays(data.client_ids[i]) for i in picked]
      seeds = [sampling.shuffle_seed(cfg.seed, 1, int(i)) for i in picked]
      datasets = [federated_data.make_client_dataset(
          x, y, batch_size=cfg.client.batch_size, epochs=cfg.client.epochs,
          shuffle_seed=s) for (x, y), s in zip(arrays, seeds)]

      def build_datasets(arrays=arrays, seeds=seeds):
        return [federated_data.make_client_dataset(
            x, y, batch_size=cfg.client.batch_size,
            epochs=cfg.client.epochs, shuffle_seed=s)
                for (x, y), s in zip(arrays, seeds)]

      def build_in_graph(arrays=arrays, seeds=seeds):
        return [federated_data.batches_in_order(
            x, y, federated_data.client_order(len(y), cfg.client.epochs, s),
            cfg.client.batch_size) for (x, y), s in zip(arrays, seeds)]

      def run_process(name, datasets=datasets):
        states[name] = processes[name].next(states[name], datasets).state

      stages = collections.OrderedDict([
          ('dataset', build_datasets),
          ('dataset, in-graph', build_in_graph),
          ('serialize', lambda datasets=datasets: (
              value_serialization.serialize_value(
                  datasets, tff.FederatedType(sequence_type, tff.CLIENTS)))),
          ('map, no-op', lambda k=k: map_noop([1] * k)),
          ('map, dataset', lambda datasets=datasets: map_dataset(datasets)),
          ('broadcast + map, bytes', lambda k=k: map_bytes(weights, [0] * k)),
          ('client work', lambda datasets=datasets: run_client_work(
              cw_state, weights, datasets)),
      ])
      for name in processes:
        stages[name] = lambda name=name: run_process(name)
      if one_graph is not None:
        width = cfg.client.batch_size
        x = np.zeros((k, width, *data.input_shape), np.float32)
        y = np.zeros((k, width), np.int32)
        counts = np.array([len(b) for _, b in arrays], np.int32)
        for j, (xs, ys) in enumerate(arrays):
          x[j, :len(ys)], y[j, :len(ys)] = xs, ys
        stages['compute, one graph'] = (
            lambda x=x, y=y, counts=counts: [
                t.numpy() for t in one_graph(x, y, counts)])

      names = list(stages)
      for fn in stages.values():  # warm-up: traces, caches, first calls
        fn()
      times = collections.defaultdict(list)
      for rep in range(_REPEATS.value):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
          t0 = time.perf_counter()
          stages[name]()
          times[name].append(time.perf_counter() - t0)
      print(f'K = {k} clients')
      for name in names:
        print(f'  {name:<27} {1000 * statistics.median(times[name]) / k:9.3f}')
      tff_next = statistics.median(times['next, tff'])
      for name in processes:
        if name != 'next, tff':
          print(f'  {name} / next, tff: '
                f'{statistics.median(times[name]) / tff_next:.3f}')


if __name__ == '__main__':
  app.run(main)
