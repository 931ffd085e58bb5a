"""Bytes of what crosses the network, computed from the tensors themselves."""

from __future__ import annotations

import tensorflow as tf


def tensor_bytes(structure) -> tf.Tensor:
  """int64 total of `size * itemsize` over every tensor in `structure`.

  Computed in TensorFlow from the actual values, so it is exact for any
  payload (float32 weights here; packed codes and scalars for the encoders).
  """
  total = tf.constant(0, tf.int64)
  for t in tf.nest.flatten(structure):
    t = tf.convert_to_tensor(t)
    total += tf.size(t, out_type=tf.int64) * t.dtype.size
  return total
