"""Shared fixtures for the learning-process tests: a small task and data."""

from __future__ import annotations

import numpy as np

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
