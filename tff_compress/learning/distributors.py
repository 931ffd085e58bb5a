"""Server -> client distribution processes (the `model_weights_distributor`).

Each distributor reports `bytes_down`: the bytes the clients received this
round, summed over clients and computed on the clients from the received
tensors. Both plug into TFF's own
`tff.learning.algorithms.build_weighted_fed_avg(model_distributor=...)`.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.learning import counters


def build_plain_broadcast(
    model_weights_type: tff.Type,
) -> tff.learning.templates.DistributionProcess:
  """Broadcasts the float32 model unchanged (TFF's broadcast, with bytes)."""

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.tensorflow.computation(model_weights_type)
  def bytes_of(weights):
    return chain_lib.payload_bytes(weights)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.SERVER),
  )
  def next_fn(state, weights):
    client_weights = tff.federated_broadcast(weights)
    received = tff.federated_map(bytes_of, client_weights)
    measurements = tff.federated_zip(
        collections.OrderedDict(bytes_down=tff.federated_sum(received)))
    return tff.templates.MeasuredProcessOutput(
        state=state, result=client_weights, measurements=measurements)

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)


def broadcast_seed(base_seed: int, round_num) -> tf.Tensor:
  """int64 [2] codec seed of the broadcast of round `round_num` (from 0).

  The device-round server (`mobile_export`) encodes with the same seed.
  """
  return tf.stack([tf.constant(base_seed, tf.int64),
                   tf.cast(round_num, tf.int64)])


def build_encoded_broadcast(
    model_weights_type, codec: codec_settings.CodecSettings, seed: int,
) -> tff.learning.templates.DistributionProcess:
  """A `DistributionProcess` sending the encoded model; clients decode it.

  The seed is a function of (config seed, round) kept in the distributor's
  state and sent with the payload. The client trains from the decoded
  (lossy) weights, and TFF's model-delta client work computes its update
  relative to exactly those weights.
  """
  coder = structure.StructureCodec(model_weights_type, codec)
  counter = counters.RoundCounter(0)

  @tff.federated_computation()
  def init_fn():
    return counter.initialize_at_server()

  @tff.tensorflow.computation(model_weights_type, np.int64)
  def encode(weights, round_num):
    s = broadcast_seed(seed, round_num)
    return collections.OrderedDict(payload=coder.encode(weights, s), seed=s)

  message_type = encode.type_signature.result

  @tff.tensorflow.computation(message_type)
  def decode(message):
    return coder.decode(message['payload'], message['seed'])

  @tff.tensorflow.computation(message_type)
  def bytes_of(message):
    return chain_lib.payload_bytes(message)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.SERVER))
  def next_fn(state, weights):
    message = tff.federated_map(encode, (weights, state))
    at_clients = tff.federated_broadcast(message)
    decoded = tff.federated_map(decode, at_clients)
    received = tff.federated_sum(tff.federated_map(bytes_of, at_clients))
    return tff.templates.MeasuredProcessOutput(
        state=counter.next_at_server(state),
        result=decoded,
        measurements=tff.federated_zip(
            collections.OrderedDict(bytes_down=received)))

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)
