"""Client -> server aggregation factories (the `model_update_aggregator`).

Factories follow TFF's convention: configuration only; `create(value_type,
weight_type)` binds the types and returns an `AggregationProcess`.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.learning import payload


class UplinkBytesFactory(tff.aggregators.WeightedAggregationFactory):
  """Wraps a weighted factory and measures the bytes each client sends.

  The uplink payload is the client's value as it enters the inner
  aggregation plus its weight (one float32). Measurements gain `bytes_up`
  (summed over clients) beside the inner factory's own measurements.
  Inner factories that encode their payload report `payload_bytes`
  themselves and are not wrapped.
  """

  def __init__(self, inner: tff.aggregators.WeightedAggregationFactory):
    self._inner = inner

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    inner_process = self._inner.create(value_type, weight_type)

    @tff.tensorflow.computation(value_type, weight_type)
    def bytes_of(value, weight):
      return payload.tensor_bytes((value, weight))

    @tff.federated_computation()
    def init_fn():
      return inner_process.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      inner_output = inner_process.next(state, value, weight)
      sent = tff.federated_map(bytes_of, (value, weight))
      measurements = tff.federated_zip(
          collections.OrderedDict(
              bytes_up=tff.federated_sum(sent),
              inner=inner_output.measurements))
      return tff.templates.MeasuredProcessOutput(
          state=inner_output.state,
          result=inner_output.result,
          measurements=measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def build_mean() -> tff.aggregators.WeightedAggregationFactory:
  """Example-weighted mean of float32 updates, uncompressed."""
  return UplinkBytesFactory(tff.aggregators.MeanFactory())
