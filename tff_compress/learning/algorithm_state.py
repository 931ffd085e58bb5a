"""Model-weight accessors of a composed `LearningAlgorithmState` process.

Every learning process this project composes itself (keyed Federated
Dropout, FedPer's local layers, pruning phases) keeps TFF's
`LearningAlgorithmState`; its `get_model_weights` / `set_model_weights`
are built here once.
"""

from __future__ import annotations

import tensorflow_federated as tff

LearningAlgorithmState = tff.learning.templates.LearningAlgorithmState


def weights_accessors(state_type) -> tuple[tff.Computation, tff.Computation]:
  """(get_model_weights, set_model_weights) for server states of
  `state_type` (a `LearningAlgorithmState` type)."""

  @tff.tensorflow.computation(state_type)
  def get_model_weights(state):
    return state.global_model_weights

  @tff.tensorflow.computation(state_type, state_type.global_model_weights)
  def set_model_weights(state, weights):
    return LearningAlgorithmState(weights, state.distributor,
                                  state.client_work, state.aggregator,
                                  state.finalizer)

  return get_model_weights, set_model_weights
