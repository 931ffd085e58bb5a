"""Lossy server->client broadcast and compressed client->server aggregation.

Both directions encode each model tensor with a codec chain from
`tff_compress.encoders` (transform -> subsample -> quantize -> bitpack, after
Caldas et al. 2018). Tensors with fewer than `min_size` elements (biases) are
sent as raw float32: their bytes are negligible and their errors are not.

What crosses the network is the encoded structure (packed codes, side
scalars, the seed); `bytes_down`/`bytes_up` are computed from exactly those
tensors inside the TFF computation.

Seeds. The broadcast seed is a function of (config seed, round) held in the
distributor's state and sent with the payload. An uplink seed must differ
per client (independent quantization noise keeps the average unbiased with
variance shrinking as 1/K) but TFF computations have no client identity, so
each client derives it from a digest of its own update, the config seed and
the round (`prng.update_seed`), and sends it (16 bytes). This keeps runs
deterministic, hence resumable bit for bit. Every seed derivation and random
draw is the integer-hash PRNG of `tff_compress.encoders.prng`, which a
phone's builtin-only TFLite graph reproduces exactly (`mobile_export`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import factory as codec_factory
from tff_compress.encoders import prng
from tff_compress.learning import payload


@dataclasses.dataclass(frozen=True)
class CodecConfig:
  """Settings of one direction (`broadcast.*` or `uplink.*` config keys)."""

  prefix: str
  transform: str = 'none'
  bits: int = 32
  subsample: float = 1.0
  min_size: int = 1000

  @classmethod
  def from_config(cls, prefix: str, section) -> 'CodecConfig':
    return cls(prefix=prefix, transform=section.transform, bits=section.bits,
               subsample=section.subsample, min_size=section.min_size)

  @property
  def is_identity(self) -> bool:
    return (self.transform == 'none' and self.bits == 32 and
            self.subsample == 1.0)

  def chain(self) -> chain_lib.Chain:
    return codec_factory.build_chain(
        transform=self.transform, subsample=self.subsample, bits=self.bits,
        config_prefix=self.prefix)


def _flatten_type(value_type) -> list:
  if isinstance(value_type, tff.TensorType):
    return [value_type]
  out = []
  for element in value_type:
    out.extend(_flatten_type(element))
  return out


class StructureCodec:
  """Encodes/decodes every tensor of a structure with one codec config."""

  def __init__(self, value_type, codec: CodecConfig):
    self._value_type = value_type
    self._tensor_types = _flatten_type(value_type)
    self._codec = codec
    self._chains: list[Optional[chain_lib.Chain]] = []
    for t in self._tensor_types:
      size = int(np.prod(t.shape))
      compress = (not codec.is_identity and size >= codec.min_size and
                  np.dtype(t.dtype) == np.float32)
      self._chains.append(codec.chain() if compress else None)

  @property
  def tensor_types(self) -> list:
    """The flattened `tff.TensorType`s, in encoding order."""
    return list(self._tensor_types)

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


def _round_seed(base_seed: int, round_num: tf.Tensor) -> tf.Tensor:
  return tf.stack([tf.constant(base_seed, tf.int64),
                   tf.cast(round_num, tf.int64)])


def build_encoded_broadcast(
    model_weights_type, codec: CodecConfig, seed: int,
) -> tff.learning.templates.DistributionProcess:
  """A `DistributionProcess` sending the encoded model; clients decode it.

  The client trains from the decoded (lossy) weights, and TFF's model-delta
  client work computes its update relative to exactly those weights.
  """
  coder = StructureCodec(model_weights_type, codec)

  @tff.tensorflow.computation
  def initial_round():
    return tf.constant(0, tf.int64)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(initial_round, tff.SERVER)

  @tff.tensorflow.computation(model_weights_type, np.int64)
  def encode(weights, round_num):
    s = _round_seed(seed, round_num)
    return collections.OrderedDict(payload=coder.encode(weights, s), seed=s)

  message_type = encode.type_signature.result

  @tff.tensorflow.computation(message_type)
  def decode(message):
    return coder.decode(message['payload'], message['seed'])

  @tff.tensorflow.computation(message_type)
  def bytes_of(message):
    return payload.tensor_bytes(message)

  @tff.tensorflow.computation(np.int64)
  def increment(round_num):
    return round_num + 1

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.SERVER))
  def next_fn(state, weights):
    message = tff.federated_map(encode, (weights, state))
    at_clients = tff.federated_broadcast(message)
    decoded = tff.federated_map(decode, at_clients)
    received = tff.federated_sum(tff.federated_map(bytes_of, at_clients))
    return tff.templates.MeasuredProcessOutput(
        state=tff.federated_map(increment, state),
        result=decoded,
        measurements=tff.federated_zip(
            collections.OrderedDict(bytes_down=received)))

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)


class EncodedMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted mean of client updates sent through a codec chain.

  Each client encodes its update (the value crossing the uplink) and the
  server decodes every payload before the weighted sum (quantization does
  not commute with sum). In TFF the per-payload decode is a `federated_map`
  at CLIENTS — TFF has no per-client map on the server — but the bytes
  measured (`bytes_up`) are those of the encoded payload plus the weight.
  Wraps an inner weighted factory (default `tff.aggregators.MeanFactory`)
  that receives the decoded values, so clipping/DP can nest around it.
  """

  def __init__(self, codec: CodecConfig, seed: int,
               inner: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    self._codec = codec
    self._seed = seed
    self._inner = inner or tff.aggregators.MeanFactory()

  def create(self, value_type, weight_type):
    coder = StructureCodec(value_type, self._codec)
    inner = self._inner.create(value_type, weight_type)
    base_seed = self._seed

    @tff.tensorflow.computation(value_type, np.int64)
    def encode(value, round_num):
      # A per-client seed: digest of the client's own update, mixed with
      # the config seed and the round (see module docstring).
      s = prng.update_seed(tf.nest.flatten(value), base_seed, round_num)
      return collections.OrderedDict(payload=coder.encode(value, s), seed=s)

    message_type = encode.type_signature.result

    @tff.tensorflow.computation(message_type)
    def decode(message):
      return coder.decode(message['payload'], message['seed'])

    @tff.tensorflow.computation(message_type, weight_type)
    def bytes_of(message, weight):
      return payload.tensor_bytes((message, weight))

    @tff.tensorflow.computation
    def initial_round():
      return tf.constant(0, tf.int64)

    @tff.tensorflow.computation(np.int64)
    def increment(round_num):
      return round_num + 1

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          round=tff.federated_eval(initial_round, tff.SERVER),
          inner=inner.initialize()))

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      round_at_clients = tff.federated_broadcast(state.round)
      message = tff.federated_map(encode, (value, round_at_clients))
      sent = tff.federated_sum(tff.federated_map(bytes_of, (message, weight)))
      decoded = tff.federated_map(decode, message)
      inner_output = inner.next(state.inner, decoded, weight)
      new_state = tff.federated_zip(collections.OrderedDict(
          round=tff.federated_map(increment, state.round),
          inner=inner_output.state))
      return tff.templates.MeasuredProcessOutput(
          state=new_state,
          result=inner_output.result,
          measurements=tff.federated_zip(collections.OrderedDict(
              bytes_up=sent, inner=inner_output.measurements)))

    return tff.templates.AggregationProcess(init_fn, next_fn)
