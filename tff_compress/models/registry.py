"""Model registry: config name -> Keras model builder."""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from tff_compress.models import caldas
from tff_compress.models import dense
from tff_compress.models import linear
from tff_compress.models import resnet

ModelBuilder = Callable[..., tf.keras.Model]

MODELS: dict[str, ModelBuilder] = {
    'caldas_cnn': caldas.build_caldas_cnn,
    'dense': dense.build_dense,
    # Multinomial logistic regression (the synthetic data's model).
    'logistic': linear.build_logistic,
    # FedGKT's networks (models/resnet.py): the edge ResNet-8 alone, and the
    # whole bottleneck ResNets (batch norm; use algorithm=fedavg_bn or
    # fedgkt, see config_lib).
    'resnet8': resnet.build_resnet8,
    'resnet20': resnet.build_resnet20,
    'resnet56': resnet.build_resnet56,
    'resnet110': resnet.build_resnet110,
}


class UnknownModelError(ValueError):
  """The configured model name is not registered."""


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    **kwargs: Any,
) -> tf.keras.Model:
  """Builds the registered model `name` for the given input and classes."""
  if name not in MODELS:
    raise UnknownModelError(
        f'model.name={name!r} is not one of {sorted(MODELS)}')
  return MODELS[name](tuple(input_shape), num_classes, **kwargs)
