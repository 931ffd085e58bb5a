"""Processes fed with client data built on the remote workers.

With remote workers (`runtime.workers`) the driver sends each sampled
client's *descriptor* (`data.store.TrainDescriptor`: client index, shuffle
seed) instead of its dataset; the learning and evaluation processes are
composed with a TensorFlow computation that builds the client's dataset from
the worker's client-data store (`data/store.py`), at CLIENTS, i.e. on the
worker that runs the client. With cohort execution each TFF client is a
cohort: its descriptor names G clients, and the worker stacks their rows
into the cohort's steps (`cohort_training_next`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.cohorts import data as cohort_data
from tff_compress.data import federated_data
from tff_compress.data import store as store_lib
from tff_compress.runtime import errors


# The element fields of the client-data sequences the workers build: a
# client's batches, or a cohort's steps (`cohorts/data.py`).
EXAMPLE_FIELDS = ('x', 'y')
COHORT_FIELDS = ('x', 'y', 'mask', 'slot')


def _is_example_sequence(type_spec, fields=EXAMPLE_FIELDS) -> bool:
  """A sequence of structs with exactly `fields` (client data)."""
  if not isinstance(type_spec, tff.SequenceType):
    return False
  element = type_spec.element
  if not isinstance(element, tff.StructType):
    return False
  names = [name for name, _ in tff.structure.iter_elements(element)]
  return tuple(names) == tuple(fields)


def _replace_sequences(type_spec, descriptor_type, fields):
  """`type_spec` with every example sequence replaced by `descriptor_type`.

  Other sequences (e.g. the one-element fault-code datasets of
  `faults.client_work`) stay: the driver sends those few bytes itself.
  """
  if _is_example_sequence(type_spec, fields):
    return tff.to_type(descriptor_type)
  if isinstance(type_spec, tff.StructType):
    return tff.StructType([
        (name, _replace_sequences(member, descriptor_type, fields))
        for name, member in tff.structure.iter_elements(type_spec)])
  return type_spec


def _build_sequences(value, type_spec, make_dataset: Callable, fields):
  """Rebuilds `value` (of the descriptor type) with datasets made on the fly."""
  if _is_example_sequence(type_spec, fields):
    if isinstance(value, tff.structure.Struct):
      value = tff.structure.to_odict(value)
    return make_dataset(value)
  if isinstance(type_spec, tff.StructType):
    members = list(tff.structure.iter_elements(type_spec))
    if isinstance(value, tff.structure.Struct):
      values = [v for _, v in tff.structure.iter_elements(value)]
    elif isinstance(value, dict):
      values = [value[name] for name, _ in members]
    else:
      values = list(value)
    built = [(name, _build_sequences(v, member, make_dataset, fields))
             for (name, member), v in zip(members, values)]
    if all(name for name, _ in built):
      return collections.OrderedDict(built)
    return [v for _, v in built]
  return value


def compose(next_fn: tff.Computation, descriptor_type,
            make_dataset: Callable,
            fields: tuple[str, ...] = EXAMPLE_FIELDS) -> tff.Computation:
  """`next_fn(state, client_data)` fed by datasets built on the clients.

  Args:
    next_fn: A computation ``(state@SERVER, {C}@CLIENTS) -> ...`` whose
      client data type ``C`` holds sequences of ``<x, y>`` batches, possibly
      inside structs (Federated Dropout's ``<key, data>``, fault codes).
    descriptor_type: The type that replaces each such sequence in ``C``.
    make_dataset: Traced inside a TensorFlow computation: descriptor
      (tensors) -> ``tf.data.Dataset`` of ``C``'s element type.
    fields: The element fields of the sequences to replace
      (:data:`EXAMPLE_FIELDS` or :data:`COHORT_FIELDS`).

  Returns:
    ``(state@SERVER, {D}@CLIENTS) -> next_fn's result``, where ``D`` is ``C``
    with descriptors instead of example datasets. The datasets are built by
    a ``federated_map`` at CLIENTS, i.e. on the worker that runs the client.
  """
  state_type, data_type = next_fn.type_signature.parameter
  client_type = data_type.member
  desc_type = _replace_sequences(client_type, descriptor_type, fields)

  @tff.tensorflow.computation(desc_type)
  def build(descriptors):
    return _build_sequences(descriptors, client_type, make_dataset, fields)

  @tff.federated_computation(state_type, tff.FederatedType(desc_type,
                                                           tff.CLIENTS))
  def next_from_descriptors(state, descriptors):
    return next_fn(state, tff.federated_map(build, descriptors))

  return next_from_descriptors


def training_next(next_fn: tff.Computation, store: store_lib.Store, *,
                  batch_size: int, epochs: int) -> tff.Computation:
  """A training `next` taking `store_lib.TrainDescriptor` s, not datasets."""

  def make(d):
    return store_lib.train_dataset(store, d['client'], d['shuffle_seed'],
                         batch_size=batch_size, epochs=epochs).take(
                             tf.cast(d['batches'], tf.int64))

  return compose(next_fn, store_lib.TRAIN_DESCRIPTOR, make)


def cohort_training_next(next_fn: tff.Computation, store: store_lib.Store,
                         *, size: int, batch_size: int,
                         epochs: int) -> tff.Computation:
  """A cohort training `next` taking `store_lib.cohort_descriptor` s.

  The worker reads the cohort's clients' rows from its store and stacks
  them with the driver's own function (`cohorts.data.stack_rows`): a
  cohort on a worker trains on exactly the steps a local cohort does.
  """

  def make(d):
    x, y, sizes = store_lib.client_rows(store, d['clients'])
    return tf.data.Dataset.from_tensor_slices(cohort_data.stack_rows(
        x, y, sizes, d['shuffle_seeds'], d['slots'], batch_size=batch_size,
        epochs=epochs))

  return compose(next_fn, store_lib.cohort_descriptor_type(size), make,
                 COHORT_FIELDS)


def evaluation_next(next_fn: tff.Computation, store: store_lib.Store, *,
                    batch_size: int) -> tff.Computation:
  """An evaluation `next` taking `store_lib.eval_descriptor` s."""

  def make(d):
    return store_lib.eval_dataset(store, d['start'], d['stop'], batch_size=batch_size)

  return compose(next_fn, store_lib.EVAL_DESCRIPTOR, make)


def fingerprint_reader(store: store_lib.Store) -> tff.Computation:
  """A computation returning the fingerprint file of `store` on its executor.

  It fails (file not found) on a worker that lacks the store.
  """

  @tff.tensorflow.computation()
  def read():
    return tf.io.read_file(f'{store.relative_dir}/fingerprint')

  return read


class DescriptorProcess:
  """A process whose `next` takes descriptors instead of datasets.

  Attributes:
    next_computation: The composed TFF computation `next` calls.
  """

  def __init__(self, process, next_fn):
    self._process = process
    self.next_computation = next_fn

  def next(self, state, client_data):
    # The composed computation (and a split across workers) returns the
    # right fields but plain containers; restore the Python classes of the
    # original result (LearningProcessOutput, the state's attrs classes, ...)
    # so that e.g. checkpoints keep one structure.
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.types import type_conversions
    # pylint: enable=g-import-not-at-top
    result = self.next_computation(state, client_data)
    return type_conversions.type_to_py_container(
        tff.structure.from_container(result, recursive=True),
        self._process.next.type_signature.result)

  def __getattr__(self, name):
    return getattr(self._process, name)


@dataclasses.dataclass(frozen=True)
class WorkerFeed:
  """Training and evaluation fed with client data built on the workers.

  Attributes:
    training: The run's `fedavg.process.Training` whose ``process.next``
      takes one `store_lib.TrainDescriptor` per client where it took a dataset
      (its `client_inputs` wraps descriptors exactly as it wraps datasets),
      or with cohorts one `store_lib.cohort_descriptor` per cohort.
    evaluation: The federated evaluation process, ``next`` taking
      :attr:`eval_descriptors`.
    eval_descriptors: The evaluation clients: contiguous slices of the test
      split, as `federated_data.eval_bounds` cuts them.
  """

  training: object
  evaluation: object
  eval_descriptors: list

  @classmethod
  def build(cls, training, evaluation, store: store_lib.Store, *, batch_size: int,
            epochs: int, eval_clients: int,
            eval_batch_size: int) -> 'WorkerFeed':
    """Composes the processes of a run with the worker-side builders."""

    def compose(next_fn):
      return training_next(next_fn, store, batch_size=batch_size,
                           epochs=epochs)

    if hasattr(training.process, 'compose_client_data'):
      # Device tiers: one computation per tier (`tiers/process.py`).
      process = training.process.compose_client_data(compose)
    elif training.cohort_size > 1:
      process = DescriptorProcess(training.process, cohort_training_next(
          training.process.next, store, size=training.cohort_size,
          batch_size=batch_size, epochs=epochs))
    else:
      process = DescriptorProcess(training.process,
                                  compose(training.process.next))
    eval_next = evaluation_next(evaluation.next, store,
                                batch_size=eval_batch_size)
    return cls(
        training=dataclasses.replace(training, process=process),
        evaluation=DescriptorProcess(evaluation, eval_next),
        eval_descriptors=[
            store_lib.eval_descriptor(a, b)
            for a, b in federated_data.eval_bounds(store.num_test, eval_clients)])


def check_workers(cluster, store: store_lib.Store) -> None:
  """Raises StoreError naming each worker that cannot read `store`.

  Args:
    cluster: A connected `runtime.remote.Cluster`.
    store: The store the run's computations will read.
  """
  read = fingerprint_reader(store)
  missing = []
  for worker in cluster.workers:
    try:
      got = cluster.run_on(worker, read)
    except errors.WorkerUnavailableError:
      raise
    except Exception:  # pylint: disable=broad-except
      missing.append(worker.target)
      continue
    if got != store.fingerprint.encode():
      missing.append(worker.target)
  if missing:
    raise store_lib.StoreError(
        f'TFF worker{"s" if len(missing) > 1 else ""} {", ".join(missing)} '
        f'cannot read this run\'s client data ({store.relative_dir}/ under '
        'its --data_dir): share this driver\'s runtime.worker_data_dir '
        f'({os.path.dirname(os.path.dirname(store.path))}) with it as '
        '--data_dir, or restart it with --config=<this run\'s config> to '
        'prepare the data there')
