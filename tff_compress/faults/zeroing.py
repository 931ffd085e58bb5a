"""Zeroing of bad updates in front of a *weighted* aggregator.

DP-FedAvg and the secure mean already start with the unweighted
`privacy.factories.ZeroingFactory`. Example-weighted FedAvg (plain or
through the uplink codec) gets this weighted counterpart when faults are
simulated. It sits outermost, so nothing inside — the codec's encoder, the
mean — ever sees a NaN or a huge value:

  WeightedZeroingFactory   client i: (Δ_i, w_i) -> (0, 0) if Δ_i has a
                           non-finite entry or ‖Δ_i‖₂ > zeroing_norm
  └ inner weighted factory (UplinkBytesFactory(MeanFactory) or
                           EncodedMeanFactory): Σ w_i Δ_i / Σ w_i

Zeroing the *weight* as well removes the client from the mean instead of
pulling it towards zero by w_i / Σ w (what TFF's `zeroing_factory`, which
keeps weights, would do): the round proceeds with the clients that remain.
If every client is zeroed, Σ w = 0 and TFF's mean returns a zero update.

Measurements: `zeroed` = clients zeroed here plus clients that arrived with
weight 0 (TFF's model-delta client work zeroes a non-finite update itself
and reports weight 0), `bytes_up` copied from the inner factory, and the
inner measurements under `inner`.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.privacy import factories as dp_factories


class WeightedZeroingFactory(tff.aggregators.WeightedAggregationFactory):
  """Zeroes (value, weight) of non-finite or over-norm client updates."""

  def __init__(self, zeroing_norm: float,
               inner: tff.aggregators.WeightedAggregationFactory):
    if not zeroing_norm > 0:
      raise ValueError(f'zeroing_norm must be > 0, got {zeroing_norm}')
    self._zeroing_norm = float(zeroing_norm)
    self._inner = inner

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type, weight_type)
    threshold = self._zeroing_norm
    inner_m_type = inner.next.type_signature.result.measurements.member
    has_bytes = (isinstance(inner_m_type, tff.StructType) and
                 'bytes_up' in tff.structure.name_list(inner_m_type))

    @tff.tensorflow.computation(value_type, weight_type)
    def zero(value, weight):
      value, flag = dp_factories.zero_bad_value(value, threshold)
      already = tf.cast(tf.equal(weight, 0), tf.int32)
      weight = tf.where(flag > 0, tf.zeros_like(weight), weight)
      return value, weight, tf.maximum(flag, already)

    @tff.tensorflow.computation(inner_m_type)
    def bytes_of(m):
      return (tf.cast(m['bytes_up'], tf.int64) if has_bytes
              else tf.constant(0, tf.int64))

    @tff.federated_computation()
    def init_fn():
      return inner.initialize()

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      value, weight, flag = tff.federated_map(zero, (value, weight))
      out = inner.next(state, value, weight)
      return tff.templates.MeasuredProcessOutput(
          state=out.state, result=out.result,
          measurements=tff.federated_zip(collections.OrderedDict(
              bytes_up=tff.federated_map(bytes_of, out.measurements),
              zeroed=tff.federated_sum(flag),
              inner=out.measurements)))

    return tff.templates.AggregationProcess(init_fn, next_fn)

