"""One codec over a structure of tensors (a model, an update).

`StructureCodec` encodes every tensor of a TFF structure type with the chain
of one direction's `CodecSettings`: tensors with at least `min_size`
float32 elements through the chain, the others raw. Tensor i draws its
randomness from `prng.fold_in(seed, i)`, so the encoding is a function of
(value, seed) that the server, the simulation and a phone's TFLite graph
compute alike.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import factory
from tff_compress.encoders import prng
from tff_compress.encoders import settings as codec_settings


def flatten_type(value_type) -> list:
  """The `tff.TensorType`s of a (nested) TFF type, in `tf.nest` order."""
  if isinstance(value_type, tff.TensorType):
    return [value_type]
  out = []
  for element in value_type:
    out.extend(flatten_type(element))
  return out


class StructureCodec:
  """Encodes/decodes every tensor of a structure with one codec setting."""

  def __init__(self, value_type, codec: codec_settings.CodecSettings):
    self._value_type = value_type
    self._tensor_types = flatten_type(value_type)
    self._codec = codec
    self._chains: list[Optional[chain_lib.Chain]] = []
    for t in self._tensor_types:
      size = int(np.prod(t.shape))
      compress = (not codec.is_identity and size >= codec.min_size and
                  np.dtype(t.dtype) == np.float32)
      self._chains.append(factory.chain_for(codec) if compress else None)

  @property
  def codec(self) -> codec_settings.CodecSettings:
    return self._codec

  @property
  def tensor_types(self) -> list:
    """The flattened `tff.TensorType`s, in encoding order."""
    return list(self._tensor_types)

  @property
  def chains(self) -> list[Optional[chain_lib.Chain]]:
    """Per tensor, its chain, or None when it is sent raw (float32)."""
    return list(self._chains)

  def specs(self) -> list:
    """Per tensor: {entry: (numpy dtype, count)} of what `encode` emits.

    Uncompressed tensors have the single entry 'raw' (float32, size).
    """
    out = []
    for t, chain in zip(self._tensor_types, self._chains):
      size = int(np.prod(t.shape))
      if chain is None:
        out.append(collections.OrderedDict(
            raw=(np.dtype(t.dtype), size)))
      else:
        out.append(chain.spec(size))
    return out

  @property
  def compressed_elements(self) -> int:
    return sum(int(np.prod(t.shape)) for t, c in
               zip(self._tensor_types, self._chains) if c is not None)

  def encode(self, value, seed: tf.Tensor):
    """-> list (one entry per tensor) of dicts of tensors to send."""
    flat = tf.nest.flatten(value)
    out = []
    for i, (tensor, chain) in enumerate(zip(flat, self._chains)):
      if chain is None:
        out.append(collections.OrderedDict(raw=tensor))
      else:
        out.append(chain.encode(tensor, prng.fold_in(seed, i)))
    return out

  def decode(self, encoded, seed: tf.Tensor):
    """Inverse of `encode`: a structure of `value_type`'s Python containers."""
    flat = []
    for i, (enc, chain, t) in enumerate(
        zip(encoded, self._chains, self._tensor_types)):
      if chain is None:
        flat.append(enc['raw'])
      else:
        flat.append(tf.reshape(
            chain.decode(enc, tuple(t.shape), prng.fold_in(seed, i)),
            t.shape))
    template = tff.types.structure_from_tensor_type_tree(
        lambda t: 0, self._value_type)
    return tf.nest.pack_sequence_as(template, flat)
