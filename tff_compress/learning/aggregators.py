"""Client -> server aggregation: one wrapper toolkit and its standard pieces.

Factories follow TFF's convention (`tff.aggregators`): a factory holds
configuration only; `create(value_type[, weight_type])` binds the types and
returns an `AggregationProcess` whose `next(state, value[, weight][, key])`
returns `(state, result, measurements)`.

**Wrappers keep the inner factory's weighting** (as TFF's
`aggregators/robust.py` does): `wrap(inner, build)` returns a weighted
factory around a weighted inner one and an unweighted factory around an
unweighted one, so the same zeroing or codec stage nests inside the
example-weighted mean, inside DP-FedAvg's unweighted sum, or around a
per-coordinate (submodel) mean. A process may take one more CLIENTS
argument after the weight, `key` (a client's submodel key, see
`learning/keyed.py`); every wrapper passes it on to its inner process.

**One measurement schema.** Each piece reports its own figures under the
standard names below and lifts the standard figures of its inner process to
its own top level (keeping the inner measurements under `inner`), so the
driver reads `measurements['bytes_up']`, `['zeroed']`, ... of the outermost
process, whatever the nesting:

  bytes_up            int64: bytes the clients sent (payload + weight)
  zeroed              int32: clients whose update was zeroed (absent when no
                      stage zeroes)
  bound_scale         float32: mean factor a DP record was shrunk by to bound
                      its decoded norm (1 = none)
  clip                float32: the current adaptive DP clip
  untrained_fraction  float32: share of coordinates no client trained
"""

from __future__ import annotations

import collections
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import bounded
from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import prng
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.learning import counters

MEASUREMENT_KEYS = ('bytes_up', 'zeroed', 'bound_scale', 'clip',
                    'untrained_fraction')

AnyFactory = (tff.aggregators.WeightedAggregationFactory |
              tff.aggregators.UnweightedAggregationFactory)
# (value_type, weight_type or None) -> AggregationProcess
Build = Callable[..., tff.templates.AggregationProcess]


class _WeightedWrapper(tff.aggregators.WeightedAggregationFactory):

  def __init__(self, build: Build):
    self._build = build

  def create(self, value_type, weight_type):
    return self._build(value_type, weight_type)


class _UnweightedWrapper(tff.aggregators.UnweightedAggregationFactory):

  def __init__(self, build: Build):
    self._build = build

  def create(self, value_type):
    return self._build(value_type, None)


def is_weighted(factory: AnyFactory) -> bool:
  return isinstance(factory, tff.aggregators.WeightedAggregationFactory)


def wrap(inner: AnyFactory, build: Build) -> AnyFactory:
  """A factory of `inner`'s weighting whose `create` is `build`.

  `build(value_type, weight_type)` gets `weight_type=None` when unweighted.
  """
  if is_weighted(inner):
    return _WeightedWrapper(build)
  if isinstance(inner, tff.aggregators.UnweightedAggregationFactory):
    return _UnweightedWrapper(build)
  raise TypeError(f'not an aggregation factory: {inner!r}')


def create(factory: AnyFactory, value_type, weight_type):
  """`factory.create` with or without the weight type, as it takes."""
  if weight_type is None:
    return factory.create(value_type)
  return factory.create(value_type, weight_type)


def key_type(process: tff.templates.AggregationProcess,
             weighted: bool) -> Optional[tff.Type]:
  """The member type of `process.next`'s `key` argument, or None."""
  params = process.next.type_signature.parameter
  position = 3 if weighted else 2
  return params[position].member if len(params) > position else None


def next_computation(state_type, value_type, weight_type, key_type_, body):
  """`next(state, value[, weight][, key])` as a federated computation.

  `body(state, value, weight, key)` builds the output; `weight`/`key` are
  None when the process has no such argument (TFF takes no varargs, hence
  the four spellings).
  """
  s = state_type
  v = tff.FederatedType(value_type, tff.CLIENTS)
  if weight_type is None and key_type_ is None:
    @tff.federated_computation(s, v)
    def next_fn(state, value):
      return body(state, value, None, None)
  elif weight_type is None:
    @tff.federated_computation(s, v, tff.FederatedType(key_type_, tff.CLIENTS))
    def next_fn(state, value, key):
      return body(state, value, None, key)
  elif key_type_ is None:
    @tff.federated_computation(s, v, tff.FederatedType(weight_type,
                                                       tff.CLIENTS))
    def next_fn(state, value, weight):
      return body(state, value, weight, None)
  else:
    @tff.federated_computation(
        s, v, tff.FederatedType(weight_type, tff.CLIENTS),
        tff.FederatedType(key_type_, tff.CLIENTS))
    def next_fn(state, value, weight, key):
      return body(state, value, weight, key)
  return next_fn


def call_next(process, state, value, weight, key):
  """`process.next` with the arguments it takes."""
  args = [state, value]
  if weight is not None:
    args.append(weight)
  if key is not None:
    args.append(key)
  return process.next(*args)


def measurement_names(process: tff.templates.AggregationProcess) -> list:
  """Top-level names of `process`'s measurements (empty if unnamed)."""
  member = process.next.type_signature.result.measurements.member
  if isinstance(member, tff.StructType):
    return [n for n in tff.structure.name_list(member)]
  return []


def measurements(own: dict, inner_process, inner_measurements):
  """Own standard figures + the inner's standard figures + `inner`.

  `own` maps names to SERVER values; a standard name both report is taken
  from `own` (the inner value stays under `inner`).
  """
  out = collections.OrderedDict(own)
  for name in measurement_names(inner_process):
    if name in MEASUREMENT_KEYS and name not in out:
      out[name] = inner_measurements[name]
  out['inner'] = inner_measurements
  return tff.federated_zip(out)


# ---- zeroing -----------------------------------------------------------------


def zero_bad_value(value, zeroing_norm: float):
  """(value, 0) if finite with ‖value‖₂ ≤ zeroing_norm, else (zeros, 1).

  The int32 flag says whether the value was zeroed. A NaN norm counts as
  too large (TFF's `zeroing_factory` tests `norm > threshold`, False for
  NaN, and would let a NaN through to the sum).
  """
  value, non_finite = bounded.zero_if_non_finite(value)
  huge = bounded.global_l2_norm(value) > zeroing_norm
  value = tf.nest.map_structure(
      lambda t: tf.where(huge, tf.zeros_like(t), t), value)
  return value, tf.cast(tf.logical_or(non_finite > 0, huge), tf.int32)


def zeroing(zeroing_norm: float, inner: AnyFactory, *,
            zero_weight: bool = True) -> AnyFactory:
  """Replaces a non-finite or over-norm client value by zeros.

  A value is zeroed if any entry is NaN/Inf or its global L2 norm exceeds
  `zeroing_norm`. Weighted: the weight is zeroed too when `zero_weight`
  (the client leaves an example-weighted mean instead of pulling it towards
  zero by w_i / Σw; keep it for a mean whose denominator must not depend on
  the data, as under DP), and a client arriving with weight 0 (TFF's
  model-delta client work zeroes a non-finite update itself) counts as
  zeroed. Measurement `zeroed`: clients zeroed this round.

  Args:
    zeroing_norm: L2 threshold, > 0.
    inner: The factory receiving the zeroed values.
    zero_weight: Weighted only: also zero a zeroed client's weight.
  """
  if not zeroing_norm > 0:
    raise ValueError(f'zeroing_norm must be > 0, got {zeroing_norm}')
  threshold = float(zeroing_norm)

  def build(value_type, weight_type):
    inner_process = create(inner, value_type, weight_type)
    weighted = weight_type is not None

    if weighted:
      @tff.tensorflow.computation(value_type, weight_type)
      def zero(value, weight):
        value, flag = zero_bad_value(value, threshold)
        already = tf.cast(tf.equal(weight, 0), tf.int32)
        if zero_weight:
          weight = tf.where(flag > 0, tf.zeros_like(weight), weight)
        return value, weight, tf.maximum(flag, already)
    else:
      @tff.tensorflow.computation(value_type)
      def zero(value):
        return zero_bad_value(value, threshold)

    def body(state, value, weight, key):
      if weighted:
        value, weight, flag = tff.federated_map(zero, (value, weight))
      else:
        value, flag = tff.federated_map(zero, value)
      out = call_next(inner_process, state, value, weight, key)
      return tff.templates.MeasuredProcessOutput(
          state=out.state, result=out.result,
          measurements=measurements(
              {'zeroed': tff.federated_sum(flag)}, inner_process,
              out.measurements))

    return tff.templates.AggregationProcess(
        inner_process.initialize,
        next_computation(inner_process.state_type, value_type, weight_type,
                         key_type(inner_process, weighted), body))

  return wrap(inner, build)


# ---- bytes of a float32 uplink -----------------------------------------------


def with_bytes_up(inner: AnyFactory) -> AnyFactory:
  """`inner`, measuring `bytes_up`: the float32 values (and weights) sent."""

  def build(value_type, weight_type):
    inner_process = create(inner, value_type, weight_type)
    weighted = weight_type is not None

    if weighted:
      @tff.tensorflow.computation(value_type, weight_type)
      def bytes_of(value, weight):
        return chain_lib.payload_bytes((value, weight))
    else:
      @tff.tensorflow.computation(value_type)
      def bytes_of(value):
        return chain_lib.payload_bytes(value)

    def body(state, value, weight, key):
      out = call_next(inner_process, state, value, weight, key)
      sent = tff.federated_map(
          bytes_of, (value, weight) if weighted else value)
      return tff.templates.MeasuredProcessOutput(
          state=out.state, result=out.result,
          measurements=measurements({'bytes_up': tff.federated_sum(sent)},
                                    inner_process, out.measurements))

    return tff.templates.AggregationProcess(
        inner_process.initialize,
        next_computation(inner_process.state_type, value_type, weight_type,
                         key_type(inner_process, weighted), body))

  return wrap(inner, build)


def build_mean() -> tff.aggregators.WeightedAggregationFactory:
  """Example-weighted mean of float32 updates, uncompressed."""
  return with_bytes_up(tff.aggregators.MeanFactory())


# ---- the encoded uplink --------------------------------------------------------


def encode_update(coder: structure.StructureCodec, identity: bool, value,
                  base_seed: int, round_num: tf.Tensor,
                  clip: Optional[float] = None):
  """The uplink message a client sends for its update `value` (TF code).

  The per-client step of `encoded`, also run per simulated client inside a
  cohort (`cohorts/client_work.py`): the seed is the digest of the value
  with the config seed and the round (`prng.update_seed`); with `clip`, the
  decoded value's L2 norm is <= clip (`bounded.bounded_encode`). An
  identity codec sends the (clipped) value itself.
  """
  if identity:
    return (value if clip is None else
            bounded.clip_by_global_l2_norm(value, clip))
  s = prng.update_seed(tf.nest.flatten(value), base_seed, round_num)
  if clip is None:
    payload = coder.encode(value, s)
  else:
    payload = bounded.bounded_encode(coder, value, s, clip)
  return collections.OrderedDict(payload=payload, seed=s)


def decode_update(coder: structure.StructureCodec, identity: bool, message):
  """The server's decoding of an `encode_update` message (TF code)."""
  if identity:
    return message
  return coder.decode(message['payload'], message['seed'])


def encoded(codec: codec_settings.CodecSettings, seed: int,
            inner: Optional[AnyFactory] = None, *,
            clip: Optional[float] = None) -> AnyFactory:
  """Client values sent through a codec chain; the inner factory gets them
  decoded.

  Each client encodes its value (what crosses the uplink) and the server
  decodes every payload before aggregating (quantization does not commute
  with sum). In TFF the per-payload decode is a `federated_map` at CLIENTS
  — TFF has no per-client map on the server — but `bytes_up` counts only
  the encoded payload (plus the weight, when weighted).

  Seeds: clients need independent quantization noise but TFF computations
  carry no client identity, so a client's seed is a digest of its own value
  mixed with the config seed and the round (`prng.update_seed`), sent with
  the payload. Runs stay deterministic, and a phone's TFLite graph computes
  the same seed from the same update.

  Args:
    codec: The uplink codec settings.
    seed: The config seed.
    inner: Receives the decoded values (default: TFF's weighted
      `MeanFactory`).
    clip: If set, the client clips its value and encodes it so that the
      *decoded* value has L2 norm <= clip (`encoders/bounded.py`; DP with a
      fixed clip). With an identity codec the value is only clipped.
  """
  inner = inner or tff.aggregators.MeanFactory()
  base_seed = int(seed)
  counter = counters.RoundCounter(0)

  def build(value_type, weight_type):
    coder = structure.StructureCodec(value_type, codec)
    if clip is not None:
      bounded.check_homogeneous(coder)
    inner_process = create(inner, value_type, weight_type)
    weighted = weight_type is not None
    identity = codec.is_identity

    @tff.tensorflow.computation(value_type, np.int64)
    def encode(value, round_num):
      return encode_update(coder, identity, value, base_seed, round_num,
                           clip)

    message_type = encode.type_signature.result

    @tff.tensorflow.computation(message_type)
    def decode(message):
      return decode_update(coder, identity, message)

    if weighted:
      @tff.tensorflow.computation(message_type, weight_type)
      def bytes_of(message, weight):
        return chain_lib.payload_bytes((message, weight))
    else:
      @tff.tensorflow.computation(message_type)
      def bytes_of(message):
        return chain_lib.payload_bytes(message)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          round=counter.initialize_at_server(),
          inner=inner_process.initialize()))

    def body(state, value, weight, key):
      round_at_clients = tff.federated_broadcast(state.round)
      message = tff.federated_map(encode, (value, round_at_clients))
      sent = tff.federated_sum(tff.federated_map(
          bytes_of, (message, weight) if weighted else message))
      decoded = tff.federated_map(decode, message)
      out = call_next(inner_process, state.inner, decoded, weight, key)
      return tff.templates.MeasuredProcessOutput(
          state=tff.federated_zip(collections.OrderedDict(
              round=counter.next_at_server(state.round), inner=out.state)),
          result=out.result,
          measurements=measurements({'bytes_up': sent}, inner_process,
                                    out.measurements))

    return tff.templates.AggregationProcess(
        init_fn,
        next_computation(init_fn.type_signature.result, value_type,
                         weight_type, key_type(inner_process, weighted),
                         body))

  return wrap(inner, build)
