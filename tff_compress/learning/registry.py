"""Registries: config names -> builders of each learning-process stage.

Adding a capability means adding an entry here; the process builder has no
if/elif chain over kinds.
"""

from __future__ import annotations

from typing import Callable

import tensorflow_federated as tff

from tff_compress.learning import aggregators
from tff_compress.learning import distributors


def _sgd_client_work(cfg, task, model_weights_type):
  del model_weights_type
  optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=cfg.client.learning_rate,
      momentum=cfg.client.momentum or None)
  return tff.learning.templates.build_model_delta_client_work(
      model_fn=task.model_fn,
      optimizer=optimizer,
      client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES)


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

# (cfg, model_weights_type) -> DistributionProcess
DISTRIBUTORS: dict[str, Callable] = {
    'plain': lambda cfg, mw_type: distributors.build_plain_broadcast(mw_type),
}

# (cfg) -> WeightedAggregationFactory
AGGREGATORS: dict[str, Callable] = {
    'mean': lambda cfg: aggregators.build_mean(),
}

# (cfg) -> tff.learning.optimizers.Optimizer; 'sgd' with lr 1 is FedAvg,
# 'adam' is FedAdam (Reddi et al. 2021).
SERVER_OPTIMIZERS: dict[str, Callable] = {
    'sgd': _sgd_server,
    'adam': _adam_server,
}
