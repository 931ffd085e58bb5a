"""Optional q-bit compression of the uploaded feature maps.

The project's codec chains (`tff_compress/encoders`) are applied to each
sample's feature map separately, each sample with its own stateless seed
``stateless_fold_in(client_seed, i)``, so only the client's seed (int64 [2],
16 bytes) is sent once. Per-sample codes also keep one bright sample from
coarsening every other sample's grid, and give the codec's tensors the
static sizes a whole client's variable-length feature tensor would not.

Quantizers (`gkt.quantizer`):

* ``uniform``: stochastic uniform quantization between the sample's min and
  max (8 bytes of side information next to H*W*C*q/8 bytes of codes);
* ``eden``: the whole-sample structured rotation and EDEN's Lloyd-Max levels
  (`encoders/rotation.py`, `encoders/eden.py`; 4 bytes of scale per
  sample). The scale is EDEN's *unbiased* one, not the minimum-error one a
  single receiver would otherwise take: the server trains its model on the
  decoded features and is deployed on the edge's true ones, so a
  systematic shrink of the features (1 - D_b: 0.64 at 1 bit) would be a
  train/test shift.

With ``bits = 32`` the float32 feature maps are sent unchanged.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_compress.encoders import factory

CONFIG_PREFIX = 'gkt'


class FeatureCodec:
  """Encodes/decodes [n, *feature_shape] float32 tensors sample by sample."""

  def __init__(self, feature_shape: Sequence[int], bits: int,
               quantizer: str = 'uniform'):
    """Raises `factory.CodecError` naming `gkt.bits` or `gkt.quantizer`
    for a bad bit width or quantizer."""
    self.feature_shape = tuple(int(d) for d in feature_shape)
    self.bits = bits
    self.quantizer = quantizer
    eden = quantizer == 'eden'
    self._chain = factory.build_chain(
        transform='rotation' if eden else 'none', subsample=1.0, bits=bits,
        config_prefix=CONFIG_PREFIX, quantizer=quantizer, scale='unbiased')
    self._size = int(np.prod(self.feature_shape))

  @property
  def is_identity(self) -> bool:
    return self.bits == 32

  def encoded_bytes_per_sample(self) -> int:
    """Bytes of one sample's entries (codes + side information)."""
    return sum(np.dtype(dtype).itemsize * count
               for dtype, count in self._chain.spec(self._size).values())

  def _signature(self):
    return collections.OrderedDict(
        (key, tf.TensorSpec([count], tf.as_dtype(dtype)))
        for key, (dtype, count) in self._chain.spec(self._size).items())

  def encode(self, features: tf.Tensor, seed: tf.Tensor):
    """[n, *shape] float32 -> what crosses the network.

    Returns:
      The features themselves when `is_identity`, else OrderedDict(
      payload=per-sample encoded entries stacked to [n, ...], seed=seed).
    """
    if self.is_identity:
      return features
    seed = tf.cast(seed, tf.int64)
    n = tf.shape(features)[0]

    def one(args):
      x, i = args
      return self._chain.encode(
          x, tf.random.experimental.stateless_fold_in(seed, i))

    payload = tf.map_fn(one, (features, tf.range(n)),
                        fn_output_signature=self._signature())
    return collections.OrderedDict(payload=payload, seed=seed)

  def decode(self, message) -> tf.Tensor:
    """Inverse of `encode`: float32 [n, *feature_shape]."""
    if self.is_identity:
      return message
    payload = message['payload']
    seed = message['seed']
    n = tf.shape(payload['values'])[0]

    def one(args):
      entries, i = args
      return self._chain.decode(
          entries, self.feature_shape,
          tf.random.experimental.stateless_fold_in(seed, i))

    return tf.map_fn(
        one, (payload, tf.range(n)),
        fn_output_signature=tf.TensorSpec(self.feature_shape, tf.float32))
