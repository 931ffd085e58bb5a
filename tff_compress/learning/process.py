"""Builds the learning process from a config: TFF's five named stages."""

from __future__ import annotations

import numpy as np
import tensorflow_federated as tff

from tff_compress.learning import registry
from tff_compress.learning import task as task_lib


def build_initial_weights_fn(task: task_lib.Task) -> tff.Computation:
  """Server computation returning the seeded initial `ModelWeights`."""

  @tff.tensorflow.computation()
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(task.model_fn())

  return initial_model_weights_fn


def build_learning_process(
    cfg, task: task_lib.Task) -> tff.learning.templates.LearningProcess:
  """distributor -> client work -> aggregator -> finalizer, from `cfg`."""
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  distributor = registry.build_distributor(cfg, model_weights_type)
  client_work = registry.CLIENT_WORKS[cfg.client.work](
      cfg, task, model_weights_type)
  aggregator = registry.build_aggregator(cfg).create(
      model_weights_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.SERVER_OPTIMIZERS[cfg.server.optimizer](cfg),
      model_weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_weights_fn, distributor, client_work, aggregator, finalizer)


def build_evaluation(task: task_lib.Task):
  """TFF's federated evaluation of the task's model."""
  return tff.learning.algorithms.build_fed_eval(task.model_fn)
