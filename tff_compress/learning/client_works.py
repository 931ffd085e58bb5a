"""The process around a stateless client work (FedProx, DP-SGD).

TFF's `ClientWorkProcess` wants an `initialize_fn` and a federated
`next_fn`; a client work without server state differs from another only in
its per-client `client_update` computation. This module builds the rest
once.
"""

from __future__ import annotations

import collections

import tensorflow_federated as tff


def stateless_client_work(
    client_update: tff.Computation, model_weights_type, data_type,
    metrics_aggregation_fn) -> tff.learning.templates.ClientWorkProcess:
  """A `ClientWorkProcess` that maps `client_update` over the clients.

  Args:
    client_update: A TF computation `(ModelWeights, dataset) ->
      (ClientResult, unfinalized metrics)`.
    model_weights_type: The `ModelWeights` type the distributor delivers.
    data_type: The clients' dataset type.
    metrics_aggregation_fn: Turns the clients' unfinalized metrics into the
      `train` measurement (`tff.learning.metrics.sum_then_finalize`).
  """

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, data):
    result, local_metrics = tff.federated_map(client_update, (weights, data))
    return tff.templates.MeasuredProcessOutput(
        state=state, result=result,
        measurements=tff.federated_zip(collections.OrderedDict(
            train=metrics_aggregation_fn(local_metrics))))

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
