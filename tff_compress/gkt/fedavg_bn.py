"""FedAvg that also averages batch-norm statistics: FedGKT's baseline.

TFF's FedAvg (`build_model_delta_client_work` + `build_apply_optimizer_
finalizer`) aggregates the *trainable* variables only; a Keras batch-norm
layer's moving mean and variance are non-trainable, so the server model keeps
its initial statistics (0 and 1) forever and evaluates in inference mode with
them (measured in docs/BENCHMARKS.md). The FedAvg that FedGKT compares with
(FedML's) averages the whole state dict. This module is that algorithm as
TFF computations:

* broadcast: the server's float32 trainable + non-trainable variables
  (``bytes_down`` = their size per client);
* client work: `client.epochs` epochs of SGD (`client.learning_rate`,
  `client.momentum`, batch `client.batch_size`) from the received weights;
  upload the trainable delta, the new non-trainable variables and the
  example count (``bytes_up``);
* aggregation: example-weighted mean of both;
* server: the configured server optimizer (`server.*`, as for
  algorithm=fedavg) applies the mean delta to the trainable variables; the
  non-trainable ones become the mean.

With server SGD at learning rate 1 the new model is exactly the
example-weighted average of the client models.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.fedavg import settings as fedavg_settings
from tff_compress.gkt import training
from tff_compress.learning import task as task_lib

_EVAL_BATCH = 256


@dataclasses.dataclass(frozen=True)
class FedAvgBnProcess:
  """Computations of FedAvg-BN.

  Attributes:
    initialize: `( -> server_state)`, OrderedDict(weights=OrderedDict(
      trainable, non_trainable), opt_state).
    next: `(server_state@SERVER, client_inputs@CLIENTS) -> <server_state@
      SERVER, metrics@SERVER>`; a client input is OrderedDict(x, y, seed).
    evaluate: `(weights@SERVER, eval_inputs@CLIENTS) -> metrics@SERVER`:
      inference-mode loss/accuracy sums over OrderedDict(x, y) shards.
    client_update: `(weights, client_input) -> OrderedDict(update, weight,
      metrics)`, the client work alone (for tests).
  """

  initialize: tff.Computation
  next: tff.Computation
  evaluate: tff.Computation
  client_update: tff.Computation


def build_fedavg_bn(client: fedavg_settings.ClientSettings,
                    server_optimizer: tff.learning.optimizers.Optimizer,
                    task: task_lib.Task, input_shape) -> FedAvgBnProcess:
  """FedAvg-BN of `task`'s model: local SGD(M) per `client`, the averaged
  update applied with `server_optimizer` (the run's `server.*`)."""
  server_opt = server_optimizer
  client_opt = tff.learning.optimizers.build_sgdm(
      client.learning_rate, momentum=client.momentum or None)
  spec = training.TrainSpec(epochs=client.epochs,
                            batch_size=client.batch_size)

  def trainable_specs(model):
    return [tf.TensorSpec(v.shape, v.dtype) for v in model.trainable_variables]

  @tff.tensorflow.computation
  def initialize():
    model = task.keras_model_fn()
    return collections.OrderedDict(
        weights=training.read_weights(model),
        opt_state=server_opt.initialize(trainable_specs(model)))

  state_type = initialize.type_signature.result
  weights_type = state_type.weights
  client_input_type = tff.to_type(collections.OrderedDict(
      x=tff.TensorType(np.float32, [None, *input_shape]),
      y=tff.TensorType(np.int32, [None]),
      seed=tff.TensorType(np.int64, [2])))

  @tf.function
  def client_step(model, weights, inp):
    training.assign_weights(model, weights)
    n = tf.shape(inp['y'])[0]
    num_classes = model.output_shape[-1]
    opt_state = client_opt.initialize(trainable_specs(model))
    _, metrics = training.train(
        model, client_opt, opt_state, inp['x'], inp['y'],
        tf.zeros([n, num_classes]), tf.zeros([n]), spec, inp['seed'])
    new = training.read_weights(model)
    update = collections.OrderedDict(
        trainable=[a - b for a, b in zip(new['trainable'],
                                         weights['trainable'])],
        non_trainable=new['non_trainable'])
    return collections.OrderedDict(
        update=update, weight=tf.cast(n, tf.float32), metrics=metrics)

  @tff.tensorflow.computation(weights_type, client_input_type)
  def client_update(weights, inp):
    return client_step(task.keras_model_fn(), weights, inp)

  update_type = client_update.type_signature.result.update

  @tff.tensorflow.computation(weights_type)
  def bytes_received(weights):
    return chain_lib.payload_bytes(weights)

  @tff.tensorflow.computation(update_type, np.float32)
  def bytes_sent(update, weight):
    return chain_lib.payload_bytes((update, weight))

  @tff.tensorflow.computation(state_type, update_type)
  def server_update(state, mean):
    weights = state['weights']
    opt_state, trainable = server_opt.next(
        state['opt_state'], weights['trainable'],
        [-d for d in mean['trainable']])
    return collections.OrderedDict(
        weights=collections.OrderedDict(
            trainable=trainable, non_trainable=mean['non_trainable']),
        opt_state=opt_state)

  @tff.federated_computation(
      tff.FederatedType(state_type, tff.SERVER),
      tff.FederatedType(client_input_type, tff.CLIENTS))
  def next_fn(state, client_inputs):
    weights = tff.federated_broadcast(state.weights)
    out = tff.federated_map(client_update, (weights, client_inputs))
    mean = tff.federated_mean(out.update, weight=out.weight)
    metrics = tff.federated_zip(collections.OrderedDict(
        train=tff.federated_sum(out.metrics),
        bytes_down=tff.federated_sum(
            tff.federated_map(bytes_received, weights)),
        bytes_up=tff.federated_sum(
            tff.federated_map(bytes_sent, (out.update, out.weight)))))
    return tff.federated_map(server_update, (state, mean)), metrics

  eval_input_type = tff.to_type(collections.OrderedDict(
      x=client_input_type.x, y=client_input_type.y))

  @tf.function
  def eval_step(model, weights, inp):
    training.assign_weights(model, weights)
    logits = training.predict(model, inp['x'], _EVAL_BATCH)[0]
    return training.evaluate(logits, inp['y'])

  @tff.tensorflow.computation(weights_type, eval_input_type)
  def eval_client(weights, inp):
    return eval_step(task.keras_model_fn(), weights, inp)

  @tff.federated_computation(
      tff.FederatedType(weights_type, tff.SERVER),
      tff.FederatedType(eval_input_type, tff.CLIENTS))
  def evaluate(weights, eval_inputs):
    return tff.federated_sum(tff.federated_map(
        eval_client, (tff.federated_broadcast(weights), eval_inputs)))

  return FedAvgBnProcess(initialize=initialize, next=next_fn,
                         evaluate=evaluate, client_update=client_update)
