"""User-level DP-FedAvg aggregation (McMahan et al. 2018) from TFF pieces.

The aggregator of `dp.mode=user` is, from the outside in:

  UniformWeightAdapter      the learning process passes weights; DP-FedAvg
                            ignores them (see below)
  └ ZeroingFactory          non-finite or huge (‖Δ‖ > dp.zeroing_norm)
                            updates become zero, counted as `zeroed`
    └ tff.aggregators.DifferentiallyPrivateFactory
                            clip to C (fixed or adaptive quantile clipping),
                            sum, add N(0, σ²C²), divide by K
      └ record aggregation  BoundedRecordSumFactory: the uplink codec, with
                            the decoded record's norm ≤ C (`bounded.py`);
                            or `secure.SecureQuantizedSumFactory`

DP-FedAvg is *unweighted*: every sampled client's clipped update counts
once and the noisy sum is divided by the fixed K = `clients_per_round`.
Example-count weights would be data-dependent (one client's weight is its
dataset size, which its data determines) and would scale its influence
beyond C, so with DP on the client work reports weight 1 per client
(`ClientWeighting.UNIFORM`) and the aggregator never reads the weights.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.learning import encoded
from tff_compress.learning import payload
from tff_compress.privacy import bounded
from tff_compress.privacy import secure


def _struct_template(value_type):
  return tff.types.structure_from_tensor_type_tree(lambda t: 0, value_type)


def _round_counter():
  """(init, increment) TFF computations of an int64 round counter."""

  @tff.tensorflow.computation
  def initial_round():
    return tf.constant(0, tf.int64)

  @tff.tensorflow.computation(np.int64)
  def increment(round_num):
    return round_num + 1

  return initial_round, increment


def zero_bad_value(value, zeroing_norm: float):
  """(value, 0) if finite with ‖value‖₂ ≤ zeroing_norm, else (zeros, 1).

  The int32 flag says whether the value was zeroed. Shared by the zeroing
  stages of DP (`ZeroingFactory`) and of fault tolerance
  (`tff_compress/faults/zeroing.py`).
  """
  value, non_finite = bounded.zero_if_non_finite(value)
  huge = bounded.global_l2_norm(value) > zeroing_norm
  value = tf.nest.map_structure(
      lambda t: tf.where(huge, tf.zeros_like(t), t), value)
  return value, tf.cast(tf.logical_or(non_finite > 0, huge), tf.int32)


class ZeroingFactory(tff.aggregators.UnweightedAggregationFactory):
  """Replaces non-finite or too-large client values by zeros.

  A value is zeroed if any entry is NaN/Inf or its global L2 norm exceeds
  `zeroing_norm`. TFF's `zeroing_factory` compares `norm > threshold`, which
  is False for a NaN norm, so it would let a NaN update through to the DP
  clip (where `tf.clip_by_global_norm` turns the whole update into NaN) —
  hence this factory. Measurements: `zeroed` (clients zeroed this round) and
  the inner factory's.
  """

  def __init__(self, zeroing_norm: float,
               inner: tff.aggregators.UnweightedAggregationFactory):
    if not zeroing_norm > 0:
      raise ValueError(f'zeroing_norm must be > 0, got {zeroing_norm}')
    self._zeroing_norm = float(zeroing_norm)
    self._inner = inner

  def create(self, value_type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type)
    threshold = self._zeroing_norm

    @tff.tensorflow.computation(value_type)
    def zero(value):
      return zero_bad_value(value, threshold)

    @tff.federated_computation()
    def init_fn():
      return inner.initialize()

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      zeroed_value, flag = tff.federated_map(zero, value)
      out = inner.next(state, zeroed_value)
      return tff.templates.MeasuredProcessOutput(
          state=out.state, result=out.result,
          measurements=tff.federated_zip(collections.OrderedDict(
              zeroed=tff.federated_sum(flag), inner=out.measurements)))

    return tff.templates.AggregationProcess(init_fn, next_fn)


class BoundedRecordSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Sums DP records sent through the uplink codec, decoded norm ≤ clip.

  This is the `record_aggregation_factory` of the DP aggregator: it receives
  each client's record after the DP query clipped it, encodes it with the
  uplink codec under `bounded.bounded_encode` so the value the server decodes
  (and sums) still has L2 norm ≤ the clip, and reports `bytes_up` (the
  encoded tensors plus the 8-byte seed, and the raw adaptive-clipping bit).

  Which bound: `clip` when given (fixed clipping: C); otherwise each record's
  own norm, which the query already capped at the current adaptive clip
  C_t — the record aggregation never sees C_t itself.

  With adaptive clipping a record is (clipped update, quantile-estimator
  bit); only the update is encoded, the bit is sent raw (float32).
  """

  def __init__(self, codec: encoded.CodecConfig, seed: int,
               clip: Optional[float], adaptive: bool):
    self._codec = codec
    self._seed = seed
    self._clip = clip
    self._adaptive = adaptive

  def create(self, record_type) -> tff.templates.AggregationProcess:
    adaptive = self._adaptive
    update_type = record_type[0] if adaptive else record_type
    coder = encoded.StructureCodec(update_type, self._codec)
    bounded.check_homogeneous(coder)
    identity = self._codec.is_identity
    clip, base_seed = self._clip, self._seed
    template = _struct_template(record_type)

    @tff.tensorflow.computation(record_type, np.int64)
    def encode(record, round_num):
      update = record[0] if adaptive else record
      message = collections.OrderedDict()
      if identity:  # float32 records, already clipped by the query
        message['payload'] = update
        scale = tf.constant(1.0)
      else:
        seed = bounded.client_seed(update, base_seed, round_num)
        bound = clip if clip is not None else bounded.global_l2_norm(update)
        out = bounded.bounded_encode_with_info(coder, update, seed, bound)
        message['payload'], message['seed'] = out.message, seed
        scale = out.scale
      if adaptive:
        message['extra'] = record[1]
      return message, scale

    message_type = encode.type_signature.result[0]

    @tff.tensorflow.computation(message_type)
    def decode(message):
      if identity:
        update = message['payload']
      else:
        update = coder.decode(message['payload'], message['seed'])
      flat = tf.nest.flatten(update)
      if adaptive:
        flat += tf.nest.flatten(message['extra'])
      return tf.nest.pack_sequence_as(template, flat)

    @tff.tensorflow.computation(message_type)
    def bytes_of(message):
      return payload.tensor_bytes(message)

    initial_round, increment = _round_counter()

    @tff.federated_computation()
    def init_fn():
      return tff.federated_eval(initial_round, tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(record_type, tff.CLIENTS))
    def next_fn(state, record):
      message, scale = tff.federated_map(
          encode, (record, tff.federated_broadcast(state)))
      decoded = tff.federated_map(decode, message)
      return tff.templates.MeasuredProcessOutput(
          state=tff.federated_map(increment, state),
          result=tff.federated_sum(decoded),
          measurements=tff.federated_zip(collections.OrderedDict(
              bytes_up=tff.federated_sum(tff.federated_map(bytes_of,
                                                           message)),
              bound_scale=tff.federated_mean(scale))))

    return tff.templates.AggregationProcess(init_fn, next_fn)


class UniformWeightAdapter(tff.aggregators.WeightedAggregationFactory):
  """Puts an unweighted aggregator where the learning process wants weights.

  `compose_learning_process` always calls `aggregator.next(state, update,
  weight)`. The weights are dropped (not sent: `bytes_up` counts none);
  clients that arrive with weight 0 are those whose update TFF's client work
  already zeroed for being non-finite, and are added to `zeroed`.

  Measurements are flattened to what the driver reads: `bytes_up`, `zeroed`,
  `bound_scale` (mean factor applied to meet the decoded-norm bound; 1 when
  nothing was shrunk), `clip` (the current clip norm when adaptive), and the
  inner factory's measurements under `detail`.
  """

  def __init__(self, inner: tff.aggregators.UnweightedAggregationFactory):
    self._inner = inner

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type)
    measurements_type = inner.next.type_signature.result.measurements.member

    @tff.tensorflow.computation(weight_type)
    def is_zero(weight):
      return tf.cast(tf.equal(weight, 0), tf.int32)

    @tff.tensorflow.computation(measurements_type, np.int32)
    def summarize(m, zero_weight):
      found = _find_leaves(m, ('bytes_up', 'zeroed', 'bound_scale', 'clip'))
      return collections.OrderedDict(
          bytes_up=tf.cast(found.get('bytes_up', 0), tf.int64),
          zeroed=tf.cast(found.get('zeroed', 0), tf.int32) + zero_weight,
          bound_scale=tf.cast(found.get('bound_scale', 1.0), tf.float32),
          clip=tf.cast(found.get('clip', -1.0), tf.float32),
          detail=m)

    @tff.federated_computation()
    def init_fn():
      return inner.initialize()

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      out = inner.next(state, value)
      zero_weight = tff.federated_sum(tff.federated_map(is_zero, weight))
      return tff.templates.MeasuredProcessOutput(
          state=out.state, result=out.result,
          measurements=tff.federated_map(
              summarize, (out.measurements, zero_weight)))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def _find_leaves(structure, names) -> dict:
  """{name: first leaf with that key, depth-first} for nested dicts/tuples."""
  found = {}

  def visit(node):
    items = None
    if isinstance(node, collections.abc.Mapping):
      items = node.items()
    elif hasattr(node, '_asdict'):
      items = node._asdict().items()
    if items is None:
      return
    for key, child in items:
      if key in names and key not in found and not isinstance(
          child, (collections.abc.Mapping, tuple, list)):
        found[key] = child
      else:
        visit(child)

  visit(structure)
  return found


def dp_query(cfg):
  """The tensorflow-privacy query of TFF's Gaussian DP-FedAvg presets.

  `DifferentiallyPrivateFactory.gaussian_fixed/gaussian_adaptive` build the
  query (including, for adaptive clipping, the split of σ between the update
  and the private quantile estimate) but take no record aggregation factory,
  so we take their query and pass our own record aggregation.
  """
  preset_cls = tff.aggregators.DifferentiallyPrivateFactory
  k = float(cfg.clients_per_round)
  sigma = float(cfg.dp.noise_multiplier)
  if cfg.dp.adaptive:
    preset = preset_cls.gaussian_adaptive(
        noise_multiplier=sigma, clients_per_round=k,
        initial_l2_norm_clip=float(cfg.dp.clip),
        target_unclipped_quantile=float(cfg.dp.target_quantile),
        learning_rate=float(cfg.dp.clip_learning_rate))
  else:
    preset = preset_cls.gaussian_fixed(
        noise_multiplier=sigma, clients_per_round=k, clip=float(cfg.dp.clip))
  return preset._query  # pylint: disable=protected-access


def build_record_aggregation(cfg) -> tff.aggregators.UnweightedAggregationFactory:
  """Secure quantized sum, or the uplink codec under the norm bound."""
  if cfg.secagg.enabled:
    return secure.SecureQuantizedSumFactory.from_config(
        cfg, l2_bound=None if cfg.dp.adaptive else float(cfg.dp.clip),
        adaptive=cfg.dp.adaptive)
  return BoundedRecordSumFactory(
      encoded.CodecConfig.from_config('uplink', cfg.uplink), seed=cfg.seed,
      clip=None if cfg.dp.adaptive else float(cfg.dp.clip),
      adaptive=cfg.dp.adaptive)


def build_user_dp_aggregator(cfg) -> tff.aggregators.WeightedAggregationFactory:
  """The `dp.mode=user` aggregator (see the module docstring)."""
  dp_factory = tff.aggregators.DifferentiallyPrivateFactory(
      dp_query(cfg), record_aggregation_factory=build_record_aggregation(cfg))
  return UniformWeightAdapter(ZeroingFactory(cfg.dp.zeroing_norm, dp_factory))


def build_secure_mean(cfg) -> tff.aggregators.WeightedAggregationFactory:
  """Secure aggregation without DP: uniform mean of integer-coded updates.

  Zeroing first (a NaN would otherwise become an arbitrary clipped code),
  then `tff.aggregators.UnweightedMeanFactory` whose value sum is the secure
  quantized sum and whose client count is a secure sum of ones.
  """
  mean = tff.aggregators.UnweightedMeanFactory(
      value_sum_factory=secure.SecureQuantizedSumFactory.from_config(cfg),
      count_sum_factory=tff.aggregators.SecureSumFactory(
          upper_bound_threshold=1, lower_bound_threshold=0))
  return UniformWeightAdapter(ZeroingFactory(cfg.dp.zeroing_norm, mean))
