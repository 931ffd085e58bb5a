"""A learning task: the model on a dataset's shapes, as TFF sees it."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import federated_data
from tff_compress.models import flops
from tff_compress.models import registry as model_registry


@dataclasses.dataclass(frozen=True)
class Task:
  """Everything the process builders need to know about model and data."""

  keras_model_fn: Callable[[], tf.keras.Model]
  input_spec: object
  num_params: int
  train_flops_per_example: int
  # (widths, scales) -> the same model with other hidden widths and
  # activation scales (Federated Dropout submodels).
  keras_model_builder: Optional[Callable[..., tf.keras.Model]] = None

  def model_fn(self) -> tff.learning.models.VariableModel:
    return tff.learning.models.from_keras_model(
        self.keras_model_fn(),
        input_spec=self.input_spec,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')],
    )

  def with_widths(self, widths: Mapping[str, int],
                  scales: Optional[Mapping[str, float]] = None) -> 'Task':
    """The task of the submodel with these hidden widths (and scales)."""
    if self.keras_model_builder is None:
      raise ValueError('this task cannot build submodels')
    widths, scales = dict(widths), dict(scales or {})
    builder = self.keras_model_builder

    def keras_model_fn():
      return builder(widths, scales)

    probe = keras_model_fn()
    return Task(keras_model_fn, self.input_spec, flops.count_params(probe),
                flops.training_flops_per_example(probe), builder)


def build_task(model_name: str, data: federated_data.FederatedData,
               seed: int) -> Task:
  """The registered model `model_name` for `data`'s input and classes."""

  def keras_model_builder(widths, scales=None):
    kwargs = {}
    if widths:
      kwargs['widths'] = dict(widths)
    if scales:
      kwargs['scales'] = dict(scales)
    return model_registry.build_model(
        model_name, data.input_shape, data.num_classes, seed=seed, **kwargs)

  def keras_model_fn():
    return keras_model_builder({})

  probe = keras_model_fn()
  return Task(
      keras_model_fn=keras_model_fn,
      input_spec=federated_data.element_spec(data.input_shape),
      num_params=flops.count_params(probe),
      train_flops_per_example=flops.training_flops_per_example(probe),
      keras_model_builder=keras_model_builder,
  )
