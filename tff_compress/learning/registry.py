"""Registries: config names -> builders of each learning-process stage.

Adding a capability means adding an entry here; the process builder has no
if/elif chain over kinds.
"""

from __future__ import annotations

from typing import Callable

import tensorflow_federated as tff

from tff_compress.faults import client_work as fault_client_work
from tff_compress.faults import schedule as fault_schedule
from tff_compress.faults import zeroing as fault_zeroing
from tff_compress.learning import aggregators
from tff_compress.learning import distributors
from tff_compress.learning import encoded
from tff_compress.privacy import dpsgd
from tff_compress.privacy import factories as dp_factories


def client_weighting(cfg) -> tff.learning.ClientWeighting:
  """Example-weighted FedAvg; uniform with DP or secure aggregation.

  DP-FedAvg is unweighted (a client's example count is data-dependent and
  would scale its influence past the clip), and the secure sum adds
  integer codes of a fixed range, so both average clients uniformly.
  """
  if cfg.dp.mode != 'none' or cfg.secagg.enabled:
    return tff.learning.ClientWeighting.UNIFORM
  return tff.learning.ClientWeighting.NUM_EXAMPLES


def _sgd_client_work(cfg, task, model_weights_type):
  """Local SGD; each step is DP-SGD (privacy/dpsgd.py) if dp.mode=sample."""
  if cfg.dp.mode == 'sample':
    return dpsgd.build_dpsgd_client_work(cfg, task, model_weights_type)
  optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=cfg.client.learning_rate,
      momentum=cfg.client.momentum or None)
  return tff.learning.templates.build_model_delta_client_work(
      model_fn=task.model_fn,
      optimizer=optimizer,
      client_weighting=client_weighting(cfg))


def _sgd_server(cfg):
  return tff.learning.optimizers.build_sgdm(
      learning_rate=cfg.server.learning_rate,
      momentum=cfg.server.momentum or None)


def _adam_server(cfg):
  return tff.learning.optimizers.build_adam(
      learning_rate=cfg.server.learning_rate,
      beta_1=cfg.server.beta_1,
      beta_2=cfg.server.beta_2,
      epsilon=cfg.server.epsilon)


# (cfg, task, model_weights_type) -> ClientWorkProcess
CLIENT_WORKS: dict[str, Callable] = {
    'sgd': _sgd_client_work,
}


def build_client_work(cfg, task, model_weights_type):
  """`client.work`; wrapped to inject NaN/huge updates if `faults.*` asks."""
  work = CLIENT_WORKS[cfg.client.work](cfg, task, model_weights_type)
  if fault_schedule.FaultSpec.from_config(cfg.faults).poisons:
    work = fault_client_work.build_fault_injecting_client_work(
        work, cfg.faults.huge_norm)
  return work


def build_distributor(cfg, model_weights_type):
  """The float32 broadcast, or the encoded one when `broadcast.*` compresses."""
  codec = encoded.CodecConfig.from_config('broadcast', cfg.broadcast)
  if codec.is_identity:
    return distributors.build_plain_broadcast(model_weights_type)
  return encoded.build_encoded_broadcast(model_weights_type, codec, cfg.seed)


def build_aggregator(cfg):
  """Weighted mean of updates, through the `uplink.*` codec if it compresses.

  With `dp.mode=user`: DP-FedAvg (zeroing -> DP clip+noise -> uplink codec
  under the decoded-norm bound, or the secure sum); with `secagg.enabled`
  alone: the secure sum of integer-quantized updates. With any `faults.*`
  knob set, the weighted mean starts with a zeroing stage (DP and the
  secure sum always have one).
  """
  if cfg.dp.mode == 'user':
    return dp_factories.build_user_dp_aggregator(cfg)
  if cfg.secagg.enabled:
    return dp_factories.build_secure_mean(cfg)
  codec = encoded.CodecConfig.from_config('uplink', cfg.uplink)
  if codec.is_identity:
    mean = aggregators.build_mean()
  else:
    mean = encoded.EncodedMeanFactory(codec, seed=cfg.seed)
  if fault_schedule.FaultSpec.from_config(cfg.faults).active:
    # Outermost, so the codec never encodes a NaN (faults/zeroing.py).
    return fault_zeroing.WeightedZeroingFactory(cfg.dp.zeroing_norm, mean)
  return mean


# (cfg) -> tff.learning.optimizers.Optimizer; 'sgd' with lr 1 is FedAvg,
# 'adam' is FedAdam (Reddi et al. 2021).
SERVER_OPTIMIZERS: dict[str, Callable] = {
    'sgd': _sgd_server,
    'adam': _adam_server,
}
