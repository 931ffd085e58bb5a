"""Activation rescaling for Federated Dropout submodels (a weightless layer)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import tensorflow as tf


def insert_scales(layers: Sequence[tf.keras.layers.Layer],
                  scales: Optional[Mapping[str, float]]) -> list:
  """Adds `Rescaling(scales[name])` right after each named layer.

  A submodel keeping k of n units of a layer can multiply that layer's
  activations by n/k during local training (the "scaler" of HeteroFL, Diao
  et al. 2021; inverted dropout), so the next layer sees inputs of the same
  magnitude as in the full model. The layer has no weights, so weight lists
  and Federated Dropout plans are unchanged.
  """
  scales = dict(scales or {})
  names = {l.name for l in layers}
  unknown = set(scales) - names
  if unknown:
    raise ValueError(f'cannot scale unknown layers {sorted(unknown)}')
  out = []
  for layer in layers:
    out.append(layer)
    if layer.name in scales and scales[layer.name] != 1.0:
      out.append(tf.keras.layers.Rescaling(
          scales[layer.name], name=f'{layer.name}_scale'))
  return out
