"""User-level DP-FedAvg aggregation (McMahan et al. 2018) from TFF pieces.

The aggregator of `dp.mode=user` is, from the outside in:

  zeroing (weighted)        non-finite or huge (‖Δ‖ > dp.zeroing_norm)
                            updates become zero, counted as `zeroed`; the
                            weight is kept (the mean's denominator is K)
  └ as_weighted_aggregator  the learning process passes weights; DP-FedAvg
                            ignores them (see below)
    └ tff.aggregators.DifferentiallyPrivateFactory
                            clip to C (fixed or adaptive quantile clipping),
                            sum, add N(0, σ²C²), divide by K
      └ record aggregation  BoundedRecordSumFactory: the uplink codec, with
                            the decoded record's norm ≤ C
                            (`encoders/bounded.py`); or
                            `secure.SecureQuantizedSumFactory`

DP-FedAvg is *unweighted*: every sampled client's clipped update counts
once and the noisy sum is divided by the fixed K = `clients_per_round`.
Example-count weights would be data-dependent (one client's weight is its
dataset size, which its data determines) and would scale its influence
beyond C, so with DP on the client work reports weight 1 per client
(`ClientWeighting.UNIFORM`) and the aggregator never reads the weights.

TFF's own factories report their figures at fixed nested places;
`with_measurements` lifts those to the standard names of the aggregation
toolkit (`learning/aggregators.py`).
"""

from __future__ import annotations

import collections
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_compress.encoders import bounded
from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.learning import aggregators
from tff_compress.learning import counters
from tff_compress.privacy import secure
from tff_compress.privacy import settings


def _struct_template(value_type):
  return tff.types.structure_from_tensor_type_tree(lambda t: 0, value_type)


def _has_path(type_spec, path: Sequence[str]) -> bool:
  for name in path:
    if (not isinstance(type_spec, tff.StructType) or
        name not in tff.structure.name_list(type_spec)):
      return False
    type_spec = type_spec[name]
  return True


def with_measurements(
    inner: tff.aggregators.UnweightedAggregationFactory,
    paths: dict[str, Sequence[str]],
) -> tff.aggregators.UnweightedAggregationFactory:
  """`inner`, reporting its figures at `paths` under standard names.

  Args:
    inner: An unweighted factory whose measurements hold, e.g., `clip` at
      `('dp_query_metrics', 'clip')`.
    paths: Standard name -> path of names in `inner`'s measurements; a path
      the created process lacks is skipped (e.g. `clip` with fixed
      clipping).
  """

  def build(value_type, weight_type):
    del weight_type  # unweighted
    inner_process = inner.create(value_type)
    m_type = inner_process.next.type_signature.result.measurements.member
    present = {name: path for name, path in paths.items()
               if _has_path(m_type, path)}

    @tff.tensorflow.computation(m_type)
    def pick(m):
      out = collections.OrderedDict()
      for name, path in present.items():
        value = m
        for key in path:
          value = value[key]
        out[name] = value
      out['inner'] = m
      return out

    @tff.federated_computation(inner_process.state_type,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      out = inner_process.next(state, value)
      return tff.templates.MeasuredProcessOutput(
          state=out.state, result=out.result,
          measurements=tff.federated_map(pick, out.measurements))

    return tff.templates.AggregationProcess(inner_process.initialize, next_fn)

  return aggregators.wrap(inner, build)


def encode_record(coder: structure.StructureCodec, identity: bool, update,
                  base_seed: int, round_num: tf.Tensor,
                  clip: Optional[float]):
  """A DP client's message for its clipped update, and the bound's scale.

  The per-record step of `BoundedRecordSumFactory` (TF code), also run per
  simulated client inside a cohort (`cohorts/client_work.py`): the decoded
  record's L2 norm stays <= `clip` (its own norm when None: adaptive
  clipping); an identity codec sends the float32 update as it is.

  Returns:
    ``(OrderedDict(payload[, seed]), scale)``: `scale` is the factor the
    record was shrunk by to bound its decoded norm (1 = none).
  """
  message = collections.OrderedDict()
  if identity:  # float32 records, already clipped by the query
    message['payload'] = update
    return message, tf.constant(1.0)
  seed = bounded.client_seed(update, base_seed, round_num)
  bound = clip if clip is not None else bounded.global_l2_norm(update)
  out = bounded.bounded_encode_with_info(coder, update, seed, bound)
  message['payload'], message['seed'] = out.message, seed
  return message, out.scale


def decode_record(coder: structure.StructureCodec, identity: bool, message):
  """The update of an `encode_record` message (TF code)."""
  if identity:
    return message['payload']
  return coder.decode(message['payload'], message['seed'])


class BoundedRecordSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Sums DP records sent through the uplink codec, decoded norm ≤ clip.

  This is the `record_aggregation_factory` of the DP aggregator: it receives
  each client's record after the DP query clipped it, encodes it with the
  uplink codec under `bounded.bounded_encode` so the value the server decodes
  (and sums) still has L2 norm ≤ the clip, and reports `bytes_up` (the
  encoded tensors plus the seed, and the raw adaptive-clipping bit) and
  `bound_scale` (the mean factor records were shrunk by).

  Which bound: `clip` when given (fixed clipping: C); otherwise each record's
  own norm, which the query already capped at the current adaptive clip
  C_t — the record aggregation never sees C_t itself.

  With adaptive clipping a record is (clipped update, quantile-estimator
  bit); only the update is encoded, the bit is sent raw (float32).
  """

  def __init__(self, codec: codec_settings.CodecSettings, seed: int,
               clip: Optional[float], adaptive: bool):
    self._codec = codec
    self._seed = seed
    self._clip = clip
    self._adaptive = adaptive

  def create(self, record_type) -> tff.templates.AggregationProcess:
    adaptive = self._adaptive
    update_type = record_type[0] if adaptive else record_type
    coder = structure.StructureCodec(update_type, self._codec)
    bounded.check_homogeneous(coder)
    identity = self._codec.is_identity
    clip, base_seed = self._clip, self._seed
    template = _struct_template(record_type)
    counter = counters.RoundCounter(0)

    @tff.tensorflow.computation(record_type, np.int64)
    def encode(record, round_num):
      update = record[0] if adaptive else record
      message, scale = encode_record(coder, identity, update, base_seed,
                                     round_num, clip)
      if adaptive:
        message['extra'] = record[1]
      return message, scale

    message_type = encode.type_signature.result[0]

    @tff.tensorflow.computation(message_type)
    def decode(message):
      update = decode_record(coder, identity, message)
      flat = tf.nest.flatten(update)
      if adaptive:
        flat += tf.nest.flatten(message['extra'])
      return tf.nest.pack_sequence_as(template, flat)

    @tff.tensorflow.computation(message_type)
    def bytes_of(message):
      return chain_lib.payload_bytes(message)

    @tff.federated_computation()
    def init_fn():
      return counter.initialize_at_server()

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(record_type, tff.CLIENTS))
    def next_fn(state, record):
      message, scale = tff.federated_map(
          encode, (record, tff.federated_broadcast(state)))
      decoded = tff.federated_map(decode, message)
      return tff.templates.MeasuredProcessOutput(
          state=counter.next_at_server(state),
          result=tff.federated_sum(decoded),
          measurements=tff.federated_zip(collections.OrderedDict(
              bytes_up=tff.federated_sum(tff.federated_map(bytes_of,
                                                           message)),
              bound_scale=tff.federated_mean(scale))))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def dp_query(dp: settings.DpSettings, clients_per_round: int):
  """The tensorflow-privacy query of TFF's Gaussian DP-FedAvg presets.

  `DifferentiallyPrivateFactory.gaussian_fixed/gaussian_adaptive` build the
  query (including, for adaptive clipping, the split of σ between the update
  and the private quantile estimate) but take no record aggregation factory,
  so we take their query and pass our own record aggregation.
  """
  preset_cls = tff.aggregators.DifferentiallyPrivateFactory
  k = float(clients_per_round)
  sigma = float(dp.noise_multiplier)
  if dp.adaptive:
    preset = preset_cls.gaussian_adaptive(
        noise_multiplier=sigma, clients_per_round=k,
        initial_l2_norm_clip=float(dp.clip),
        target_unclipped_quantile=float(dp.target_quantile),
        learning_rate=float(dp.clip_learning_rate))
  else:
    preset = preset_cls.gaussian_fixed(
        noise_multiplier=sigma, clients_per_round=k, clip=float(dp.clip))
  return preset._query  # pylint: disable=protected-access


def gaussian_noise(dp: settings.DpSettings):
  """Adds DP-FedAvg's noise N(0, (σC)²) to every coordinate of a sum.

  For a sum of clipped records computed outside TFF's DP factory (device
  tiers sum each tier's records in its own pass, `tiers/process.py`): the
  same Gaussian query as `gaussian_fixed`'s (tensorflow-privacy's
  `GaussianSumQuery` with stddev σC), added once. Unseeded, as TFF's.

  Returns:
    A function list of float tensors -> list of noised tensors, to trace
    inside a TFF computation.
  """
  if dp.adaptive:
    raise ValueError('gaussian_noise is for a fixed clip (dp.adaptive off)')
  query = tfp.GaussianSumQuery(l2_norm_clip=float(dp.clip),
                               stddev=float(dp.clip * dp.noise_multiplier))

  def noise(total):
    noised, _, _ = query.get_noised_result(list(total),
                                           query.initial_global_state())
    return noised

  return noise


# Where TFF's DP factory reports the standard figures.
_DP_PATHS = {
    'bytes_up': ('dp', 'bytes_up'),
    'bound_scale': ('dp', 'bound_scale'),
    'clip': ('dp_query_metrics', 'clip'),
}


def dp_sum(dp: settings.DpSettings, clients_per_round: int,
           record_aggregation: Optional[
               tff.aggregators.UnweightedAggregationFactory] = None,
           ) -> tff.aggregators.UnweightedAggregationFactory:
  """TFF's DP factory (clip, sum through `record_aggregation`, noise, / K)
  with standard measurements."""
  return with_measurements(
      tff.aggregators.DifferentiallyPrivateFactory(
          dp_query(dp, clients_per_round),
          record_aggregation_factory=record_aggregation),
      _DP_PATHS)


def build_record_aggregation(
    dp: settings.DpSettings, secagg: settings.SecAggSettings,
    uplink: codec_settings.CodecSettings, seed: int,
) -> tff.aggregators.UnweightedAggregationFactory:
  """Secure quantized sum, or the uplink codec under the norm bound."""
  clip = None if dp.adaptive else float(dp.clip)
  if secagg.enabled:
    return secure.SecureQuantizedSumFactory.from_settings(
        secagg, seed, l2_bound=clip, adaptive=dp.adaptive)
  return BoundedRecordSumFactory(uplink, seed=seed, clip=clip,
                                 adaptive=dp.adaptive)


def build_user_dp_aggregator(
    dp: settings.DpSettings, secagg: settings.SecAggSettings,
    uplink: codec_settings.CodecSettings, *, seed: int,
    clients_per_round: int) -> tff.aggregators.WeightedAggregationFactory:
  """The `dp.mode=user` aggregator (see the module docstring)."""
  dp_factory = dp_sum(dp, clients_per_round,
                      build_record_aggregation(dp, secagg, uplink, seed))
  return aggregators.zeroing(
      dp.zeroing_norm, tff.aggregators.as_weighted_aggregator(dp_factory),
      zero_weight=False)


def build_secure_mean(dp: settings.DpSettings,
                      secagg: settings.SecAggSettings, *, seed: int
                      ) -> tff.aggregators.WeightedAggregationFactory:
  """Secure aggregation without DP: uniform mean of integer-coded updates.

  Zeroing first (a NaN would otherwise become an arbitrary clipped code),
  then `tff.aggregators.UnweightedMeanFactory` whose value sum is the secure
  quantized sum and whose client count is a secure sum of ones.
  """
  mean = tff.aggregators.UnweightedMeanFactory(
      value_sum_factory=secure.SecureQuantizedSumFactory.from_settings(
          secagg, seed),
      count_sum_factory=tff.aggregators.SecureSumFactory(
          upper_bound_threshold=1, lower_bound_threshold=0))
  mean = with_measurements(mean, {'bytes_up': ('mean_value', 'bytes_up')})
  return aggregators.zeroing(
      dp.zeroing_norm, tff.aggregators.as_weighted_aggregator(mean),
      zero_weight=False)
