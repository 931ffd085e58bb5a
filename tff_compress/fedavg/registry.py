"""Registries: settings -> the pieces of each learning-process stage.

Adding a capability means adding an entry here; the process builder has no
if/elif chain over kinds. Every builder takes settings objects
(`fedavg.settings.TrainingSettings`), never the config.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow_federated as tff

from tff_compress.encoders import settings as codec_settings
from tff_compress.faults import client_work as fault_client_work
from tff_compress.fedavg import settings
from tff_compress.learning import aggregators
from tff_compress.learning import distributors
from tff_compress.learning import keyed
from tff_compress.privacy import dpsgd
from tff_compress.privacy import factories as dp_factories
from tff_compress.privacy import secure


def client_weighting(ts: settings.TrainingSettings
                     ) -> tff.learning.ClientWeighting:
  """Example-weighted FedAvg; uniform with DP or secure aggregation."""
  if ts.uniform_weights:
    return tff.learning.ClientWeighting.UNIFORM
  return tff.learning.ClientWeighting.NUM_EXAMPLES


def _sgd_client_work(ts: settings.TrainingSettings, task, model_weights_type):
  """Local SGD; each step is DP-SGD (privacy/dpsgd.py) if dp.mode=sample."""
  c = ts.client
  if ts.dp.sample_level:
    return dpsgd.build_dpsgd_client_work(
        task, model_weights_type, ts.dp, learning_rate=c.learning_rate,
        momentum=c.momentum, batch_size=c.batch_size)
  optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=c.learning_rate, momentum=c.momentum or None)
  return tff.learning.templates.build_model_delta_client_work(
      model_fn=task.model_fn,
      optimizer=optimizer,
      client_weighting=client_weighting(ts))


def _sgd_server(server: settings.ServerSettings):
  return tff.learning.optimizers.build_sgdm(
      learning_rate=server.learning_rate, momentum=server.momentum or None)


def _adam_server(server: settings.ServerSettings):
  return tff.learning.optimizers.build_adam(
      learning_rate=server.learning_rate, beta_1=server.beta_1,
      beta_2=server.beta_2, epsilon=server.epsilon)


# `client.work` -> (TrainingSettings, task, model_weights_type) ->
# ClientWorkProcess
CLIENT_WORKS: dict[str, Callable] = {
    'sgd': _sgd_client_work,
}

# `server.optimizer` -> (ServerSettings) -> tff.learning.optimizers.Optimizer;
# 'sgd' with lr 1 is FedAvg, with momentum FedAvgM, 'adam' is FedAdam
# (Reddi et al. 2021).
SERVER_OPTIMIZERS: dict[str, Callable] = {
    'sgd': _sgd_server,
    'adam': _adam_server,
}


def build_server_optimizer(server: settings.ServerSettings):
  """`server.optimizer` as a `tff.learning.optimizers.Optimizer`."""
  return SERVER_OPTIMIZERS[server.optimizer](server)


def build_client_work(ts: settings.TrainingSettings, task,
                      model_weights_type):
  """`client.work`; wrapped to inject NaN/huge updates if `faults.*` asks."""
  work = CLIENT_WORKS[ts.client.work](ts, task, model_weights_type)
  if ts.faults.poisons:
    work = fault_client_work.build_fault_injecting_client_work(
        work, ts.faults.huge_norm)
  return work


def build_distributor(ts: settings.TrainingSettings, model_weights_type):
  """The float32 broadcast, or the encoded one when `broadcast.*` compresses."""
  if ts.broadcast.is_identity:
    return distributors.build_plain_broadcast(model_weights_type)
  return distributors.build_encoded_broadcast(model_weights_type,
                                              ts.broadcast, ts.seed)


def build_aggregator(
    ts: settings.TrainingSettings, slicing: Optional[keyed.Slicing] = None,
    global_type=None, *, untrusted: bool = False,
) -> tff.aggregators.WeightedAggregationFactory:
  """Weighted mean of updates, through the `uplink.*` codec if it compresses.

  Pieces, from the outside in (`learning/aggregators.py` wrappers keep the
  inner weighting):

  * zeroing of non-finite / over-`dp.zeroing_norm` updates — with any
    `faults.*` knob, for `untrusted` updates (a real device round), and
    always under DP or the secure sum. Outermost, so a codec never encodes
    a NaN;
  * the uplink codec (`uplink.*`), or the float32 bytes count;
  * the mean: example-weighted (TFF's `MeanFactory`), or, when clients train
    slices (`slicing`: Federated Dropout), the per-coordinate
    `keyed.ScatterMeanFactory` over the global shape `global_type`.

  With `dp.mode=user`, DP-FedAvg: without slices the codec is DP's record
  aggregation (inside TFF's DP factory, after its clip, under the
  decoded-norm bound); with slices the client clips and bounded-encodes its
  slice update and the DP noise is added to the scattered sum. With
  `secagg.enabled` the sum is the secure quantized sum.
  """
  dp, secagg = ts.dp, ts.secagg
  k = ts.clients_per_round
  if slicing is None:
    if dp.user_level:  # (always zeroes)
      return dp_factories.build_user_dp_aggregator(
          dp, secagg, ts.uplink, seed=ts.seed, clients_per_round=k)
    if secagg.enabled:
      return dp_factories.build_secure_mean(dp, secagg, seed=ts.seed)
    mean = tff.aggregators.MeanFactory()
  else:
    # The clients' decoded slice updates, scattered and weighted, are
    # summed on the global shape (where DP noise belongs), then divided
    # per coordinate.
    if dp.user_level:
      total = dp_factories.dp_sum(
          dp, k, dp_factories.build_record_aggregation(
              dp, secagg, codec_settings.UplinkCodec(), ts.seed)
          if secagg.enabled else None)
      scale = float(k)  # the DP query averages over K: back to a sum
    elif secagg.enabled:
      total = secure.SecureQuantizedSumFactory.from_settings(secagg, ts.seed)
      scale = 1.0
    else:
      total, scale = None, 1.0
    mean = keyed.ScatterMeanFactory(slicing, global_type, total, scale)
  clip = float(dp.clip) if dp.user_level and not dp.adaptive else None
  if secagg.enabled:
    # The secure sum counts what a SecAgg client sends (a global-size
    # vector of integer codes); DP's own clip bounds a scattered record.
    pass
  elif slicing is not None and clip is not None:
    mean = aggregators.encoded(ts.uplink, ts.seed, mean, clip=clip)
  elif ts.uplink.is_identity:
    mean = aggregators.with_bytes_up(mean)
  else:
    mean = aggregators.encoded(ts.uplink, ts.seed, mean)
  if dp.user_level or secagg.enabled:
    # The mean's denominator (K, or the slices' counts) must not depend on
    # which updates were zeroed.
    return aggregators.zeroing(dp.zeroing_norm, mean, zero_weight=False)
  if ts.faults.active or untrusted:
    return aggregators.zeroing(dp.zeroing_norm, mean)
  return mean
