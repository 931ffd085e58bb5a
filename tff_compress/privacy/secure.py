"""Secure aggregation of integer-quantized updates (`secagg.enabled`).

Each client maps its update to integers and the server only ever receives
their sum, through `tff.aggregators.SecureSumFactory` (TFF's
`federated_secure_sum_bitwidth`). The client-side map, per coordinate:

  x ← clip(x, −B, B);  t = x / Δ with Δ = B / M, M = 2^(bits−1) − 1;
  q = ⌊t⌋ + Bernoulli(t − ⌊t⌋)  ∈ [−M, M]   (stochastic rounding, E[q Δ] = x)

and the server decodes Σ q · Δ. B = `secagg.range`, bits = `secagg.bits`.
Coordinate-wise clipping toward zero never increases |x_i|, so it never
breaks an L2 bound. With an L2 bound C (user-level DP with fixed clipping)
the client also checks the decoded norm ‖q Δ‖ ≤ C; if stochastic rounding
pushed it over, it sends q = trunc(t) (rounded toward zero, |q_i Δ| ≤ |x_i|,
so ‖q Δ‖ ≤ ‖x‖ ≤ C) — the sensitivity the DP noise is calibrated to holds
for the value the server adds up. A SecAgg protocol would also need the sum
to fit its modulus: SecureSumFactory derives the bit width from [−M, M] and
TFF adds ⌈log2 K⌉ bits for K clients.

Execution. TFF's C++ worker has no secure-sum intrinsic ("Cannot embed a
federated value"); `runtime.local.local_context` compiles it, as TFF's test
execution context does, into a plain sum that asserts every client's value
is within the declared bounds. Nothing is encrypted in simulation: the
option shows what the protocol would receive and costs, and that training
works on integer sums.

`bytes_up` counts what a SecAgg client sends for the vector: each coordinate
as an integer modulo 2^(bits + ⌈log2 K⌉), packed, i.e.
⌈n · (bits + ⌈log2 K⌉) / 8⌉ bytes per client (Bonawitz et al. 2017 masking),
plus nothing for weights (uniform mean). The protocol's key agreement and
secret-sharing messages (O(K) per client) are not counted.
"""

from __future__ import annotations

import collections
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import bounded
from tff_compress.privacy import settings


def _max_code(bits: int) -> int:
  return 2**(bits - 1) - 1


def quantize(value, seed: tf.Tensor, value_range: float, bits: int,
             l2_bound: Optional[float] = None):
  """Integer codes of a float structure (see module docstring).

  Args:
    value: Structure of float tensors.
    seed: int64 [2] stateless seed of the stochastic rounding.
    value_range: B, coordinates are clipped to [−B, B].
    bits: Code width; codes lie in [−M, M], M = 2^(bits−1) − 1.
    l2_bound: If set, the decoded structure has L2 norm ≤ this bound
      (given the input's norm is ≤ it).

  Returns:
    (int32 codes with `value`'s structure, 1.0 if truncation was used).
  """
  m = _max_code(bits)
  step = value_range / m
  flat = tf.nest.flatten(value)
  scaled = [tf.clip_by_value(tf.cast(t, tf.float32), -value_range,
                             value_range) / step for t in flat]
  stochastic = []
  for i, t in enumerate(scaled):
    u = tf.random.stateless_uniform(
        tf.shape(t), seed=tf.random.experimental.stateless_fold_in(seed, i))
    floor = tf.floor(t)
    stochastic.append(tf.clip_by_value(
        floor + tf.cast(u < t - floor, tf.float32), -m, m))
  truncated = False
  if l2_bound is not None:
    norm = bounded.global_l2_norm([q * step for q in stochastic])
    truncated = tf.logical_not(norm <= l2_bound)
    codes = [tf.where(truncated, tf.sign(t) * tf.floor(tf.abs(t)), q)
             for t, q in zip(scaled, stochastic)]
  else:
    codes = stochastic
  codes = [tf.cast(q, tf.int32) for q in codes]
  return (tf.nest.pack_sequence_as(value, codes),
          tf.cast(truncated, tf.float32))


def dequantize(codes, value_range: float, bits: int):
  step = value_range / _max_code(bits)
  return tf.nest.map_structure(lambda q: tf.cast(q, tf.float32) * step, codes)


class SecureQuantizedSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Σ of client values through SecureSumFactory on integer codes.

  Usable on its own (inside `tff.aggregators.UnweightedMeanFactory`) or as
  the record aggregation of `DifferentiallyPrivateFactory`; with adaptive
  clipping the record's quantile bit (±0.5) is sent as the integer ±1 and
  securely summed too.
  Measurements: `bytes_up`, `secure_truncated` (clients that fell back to
  truncation), TFF's secure-sum counters under `secure`.
  """

  def __init__(self, value_range: float, bits: int, seed: int,
               l2_bound: Optional[float] = None, adaptive: bool = False):
    if not value_range > 0:
      raise ValueError(f'value_range must be > 0, got {value_range}')
    if not 2 <= bits <= 24:
      raise ValueError(f'bits must be in 2..24, got {bits}')
    self._range = float(value_range)
    self._bits = int(bits)
    self._seed = int(seed)
    self._l2_bound = l2_bound
    self._adaptive = adaptive

  @classmethod
  def from_settings(cls, secagg: settings.SecAggSettings, seed: int,
                    l2_bound: Optional[float] = None,
                    adaptive: bool = False) -> 'SecureQuantizedSumFactory':
    return cls(secagg.range, secagg.bits, seed, l2_bound, adaptive)

  def create(self, value_type) -> tff.templates.AggregationProcess:
    adaptive, rng, bits = self._adaptive, self._range, self._bits
    l2_bound, base_seed = self._l2_bound, self._seed
    main_type = value_type[0] if adaptive else value_type
    template = tff.types.structure_from_tensor_type_tree(lambda t: 0,
                                                         value_type)
    elements = sum(int(np.prod(t.shape)) for t in
                   tf.nest.flatten(tff.types.structure_from_tensor_type_tree(
                       lambda t: t, value_type)))
    m = _max_code(bits)

    @tff.tensorflow.computation(value_type)
    def encode(value):
      main = value[0] if adaptive else value
      # Distinct per client and round: the update's fingerprint.
      seed = bounded.client_seed(main, base_seed, 0)
      codes, truncated = quantize(main, seed, rng, bits, l2_bound)
      flat = tf.nest.flatten(codes)
      if adaptive:  # the quantile bit is ±0.5: exactly ±1 on a 2-bit grid
        flat.append(quantize(value[1], seed, 0.5, 2)[0])
      return flat, truncated

    codes_type = encode.type_signature.result[0]
    inner = tff.aggregators.SecureSumFactory(
        upper_bound_threshold=m, lower_bound_threshold=-m).create(codes_type)
    num_main = len(codes_type) - (1 if adaptive else 0)

    @tff.tensorflow.computation(codes_type)
    def decode(summed):
      summed = list(summed)
      flat = list(dequantize(summed[:num_main], rng, bits))
      if adaptive:
        flat.append(dequantize(summed[num_main], 0.5, 2))
      return tf.nest.pack_sequence_as(template, flat)

    @tff.tensorflow.computation(np.int32)
    def payload_bytes(num_clients):
      width = bits + tf.math.ceil(tf.math.log(
          tf.maximum(tf.cast(num_clients, tf.float32), 1.0)) / math.log(2.0))
      per_client = tf.math.ceil(elements * width / 8.0)
      return tf.cast(per_client, tf.int64) * tf.cast(num_clients, tf.int64)

    @tff.tensorflow.computation
    def one():
      return tf.constant(1, tf.int32)

    @tff.federated_computation()
    def init_fn():
      return inner.initialize()

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      codes, truncated = tff.federated_map(encode, value)
      out = inner.next(state, codes)
      count = tff.federated_sum(tff.federated_eval(one, tff.CLIENTS))
      return tff.templates.MeasuredProcessOutput(
          state=out.state,
          result=tff.federated_map(decode, out.result),
          measurements=tff.federated_zip(collections.OrderedDict(
              bytes_up=tff.federated_map(payload_bytes, count),
              secure_truncated=tff.federated_sum(truncated),
              secure=out.measurements)))

    return tff.templates.AggregationProcess(init_fn, next_fn)

