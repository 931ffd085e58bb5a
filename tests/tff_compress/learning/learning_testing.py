"""Shared fixtures for the learning-process tests: a small task and data."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import federated_data
from tff_compress.learning import task as task_lib
from tff_compress.models import flops
from tff_compress.models import registry as model_registry

SHAPE = (28, 28, 1)


def small_task(hidden: int = 16) -> task_lib.Task:
  """A seeded dense model on 28x28x1 inputs with 10 classes."""

  def keras_model_fn():
    return model_registry.build_model('dense', SHAPE, 10, hidden=(hidden,),
                                      seed=1)

  probe = keras_model_fn()
  return task_lib.Task(keras_model_fn, federated_data.element_spec(SHAPE),
                       flops.count_params(probe),
                       flops.training_flops_per_example(probe))


def random_datasets(sizes, seed: int = 0):
  """One client dataset per size: random images and labels, batch 8."""
  rng = np.random.default_rng(seed)
  out = []
  for i, n in enumerate(sizes):
    x = rng.random((n,) + SHAPE, dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    out.append(federated_data.make_client_dataset(
        x, y, batch_size=8, epochs=1, shuffle_seed=i))
  return out


def count_client_work(sub_weights_type, data_type, nan_size: int = -1):
  """A client work whose update is the client's example count n in every
  coordinate, with weight n, so aggregated means are known by hand.

  A client with exactly `nan_size` examples sends NaN instead.
  """

  @tff.tensorflow.computation(data_type)
  def count(dataset):
    return dataset.reduce(tf.constant(0.0), lambda n, b: n + tf.cast(
        tf.shape(b['y'])[0], tf.float32))

  @tff.tensorflow.computation(sub_weights_type.trainable, np.float32)
  def fill(like, n):
    v = tf.where(tf.equal(n, float(nan_size)), float('nan'), n)
    return tf.nest.map_structure(lambda t: tf.fill(tf.shape(t), v), like)

  @tff.federated_computation()
  def init():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(
      init.type_signature.result,
      tff.FederatedType(sub_weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, data):
    n = tff.federated_map(count, data)
    update = tff.federated_map(fill, (weights.trainable, n))
    return tff.templates.MeasuredProcessOutput(
        state, tff.federated_zip(
            tff.learning.templates.ClientResult(update, n)),
        tff.federated_value((), tff.SERVER))

  return tff.learning.templates.ClientWorkProcess(init, next_fn)
