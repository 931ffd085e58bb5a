"""Server -> client distribution processes (the `model_weights_distributor`).

Each distributor reports `bytes_down`: the bytes the clients received this
round, summed over clients and computed on the clients from the received
tensors.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.learning import payload


def build_plain_broadcast(
    model_weights_type: tff.Type,
) -> tff.learning.templates.DistributionProcess:
  """Broadcasts the float32 model unchanged (TFF's broadcast, with bytes)."""

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.tensorflow.computation(model_weights_type)
  def bytes_of(weights):
    return payload.tensor_bytes(weights)

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
