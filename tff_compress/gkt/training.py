"""Local training shared by the FedGKT client, the FedGKT server and FedAvg-BN.

All three train a Keras model on arrays held in the computation (images on a
client, uploaded feature maps on the server) with

  L = mean_i CE(y_i, z_i) + kd_weight * KD_T(teacher -> z)
      + (weight_decay / 2) * sum_w ||w||^2

(the L2 term is PyTorch's ``weight_decay`` as FedML's optimizers apply it;
KD_T: see `losses.py`). The teacher logits of sample i are looked up by the
sample's stable id i -- its row in the arrays -- never by its position in a
batch, so they stay matched to their sample under any shuffling. Each epoch
visits the n rows in a fresh order drawn from a stateless seed (deterministic,
hence resumable), in batches of `batch_size` (the last one smaller).

Optimizers are TFF's functional ones (`tff.learning.optimizers`): their state
is a structure of tensors that enters and leaves TFF computations, so a
client's optimizer state persists between its rounds as in FedML, where each
client keeps its trainer object.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.gkt import losses


def _adam(learning_rate: float) -> tff.learning.optimizers.Optimizer:
  # PyTorch's Adam epsilon (FedML's optimizer), not Keras' 1e-7.
  return tff.learning.optimizers.build_adam(learning_rate, epsilon=1e-8)


def _sgdm(learning_rate: float) -> tff.learning.optimizers.Optimizer:
  # FedML's SGD setting: momentum 0.9.
  return tff.learning.optimizers.build_sgdm(learning_rate, momentum=0.9)


def _sgd(learning_rate: float) -> tff.learning.optimizers.Optimizer:
  return tff.learning.optimizers.build_sgdm(learning_rate)


# Config `gkt.client_optimizer` / `gkt.server_optimizer` -> builder(lr).
OPTIMIZERS: dict[str, Callable[[float], tff.learning.optimizers.Optimizer]] = {
    'adam': _adam,
    'sgdm': _sgdm,
    'sgd': _sgd,
}


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Hyperparameters of one local training call.

  Attributes:
    epochs: Passes over the rows.
    batch_size: Rows per step.
    kd_weight: Weight of the distillation term (alpha on clients, beta on
      the server; 0 = cross-entropy only).
    temperature: Distillation temperature T.
    weight_decay: L2 coefficient (gradient += weight_decay * w).
  """

  epochs: int
  batch_size: int
  kd_weight: float = 0.0
  temperature: float = 1.0
  weight_decay: float = 0.0


def epoch_orders(n: tf.Tensor, epochs: int, seed: tf.Tensor) -> tf.Tensor:
  """int32 [epochs, n]: a uniformly random permutation of 0..n-1 per epoch.

  Permutation e is the argsort of n stateless uniforms drawn from
  ``stateless_fold_in(seed, e)``: a function of (seed, e, n) only.
  """
  orders = []
  for e in range(epochs):
    u = tf.random.stateless_uniform(
        tf.reshape(n, [1]), seed=tf.random.experimental.stateless_fold_in(
            seed, e))
    orders.append(tf.cast(tf.argsort(u), tf.int32))
  return tf.stack(orders)


def _first(outputs):
  return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


@tf.function
def train(model: tf.keras.Model,
          optimizer: tff.learning.optimizers.Optimizer,
          opt_state,
          x: tf.Tensor,
          y: tf.Tensor,
          teacher: tf.Tensor,
          teacher_mask: tf.Tensor,
          spec: TrainSpec,
          seed: tf.Tensor):
  """Trains `model`'s variables in place; returns (opt_state, metrics).

  Args:
    model: Keras model whose (first) output is the logits.
    optimizer: A `tff.learning.optimizers.Optimizer`.
    opt_state: Its state for `model.trainable_variables`.
    x: [n, ...] inputs (row i = sample id i).
    y: int32 [n] labels.
    teacher: float32 [n, K] teacher logits of each sample.
    teacher_mask: float32 [n], 1 where `teacher` holds logits.
    spec: Epochs, batch size and loss weights.
    seed: int64 [2] seed of the per-epoch orders.

  Returns:
    The new optimizer state and OrderedDict of float32 sums over every
    sample visited: loss_sum (CE + kd_weight * KD, without the L2 term),
    ce_sum, kd_sum (over samples with a teacher), correct, count.
  """
  n = tf.shape(y)[0]
  b = spec.batch_size
  orders = epoch_orders(n, spec.epochs, seed)
  per_epoch = (n + b - 1) // b
  variables = model.trainable_variables
  zero = tf.constant(0.0, tf.float32)
  ce_sum, kd_sum, correct, count = zero, zero, zero, zero
  for step in tf.range(per_epoch * spec.epochs):
    epoch = step // per_epoch
    start = (step % per_epoch) * b
    idx = orders[epoch, start:tf.minimum(start + b, n)]
    xb = tf.gather(x, idx)
    yb = tf.gather(y, idx)
    tb = tf.gather(teacher, idx)
    mb = tf.gather(teacher_mask, idx)
    with tf.GradientTape() as tape:
      logits = _first(model(xb, training=True))
      ce = losses.ce_per_sample(yb, logits)
      kd = losses.kl_per_sample(logits, tf.stop_gradient(tb),
                                spec.temperature) * mb
      loss = tf.reduce_mean(ce)
      if spec.kd_weight:
        loss += spec.kd_weight * tf.math.divide_no_nan(
            tf.reduce_sum(kd), tf.reduce_sum(mb))
      if spec.weight_decay:
        loss += 0.5 * spec.weight_decay * tf.add_n(
            [tf.reduce_sum(tf.square(v)) for v in variables])
    grads = tape.gradient(loss, variables)
    opt_state, updated = optimizer.next(opt_state, list(variables),
                                        list(grads))
    for v, t in zip(variables, updated):
      v.assign(t)
    ce_sum += tf.reduce_sum(ce)
    kd_sum += tf.reduce_sum(kd)
    correct += tf.reduce_sum(tf.cast(
        tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                 tf.cast(yb, tf.int32)), tf.float32))
    count += tf.cast(tf.size(yb), tf.float32)
  return opt_state, collections.OrderedDict(
      loss_sum=ce_sum + spec.kd_weight * kd_sum, ce_sum=ce_sum, kd_sum=kd_sum,
      correct=correct, count=count)


@tf.function
def predict(model: tf.keras.Model, x: tf.Tensor, batch_size: int):
  """Inference-mode outputs of `model` on all rows of `x`, in row order.

  Returns:
    A list with one tensor per model output, each [n, ...].
  """
  n = tf.shape(x)[0]
  steps = (n + batch_size - 1) // batch_size
  outputs = model.outputs
  arrays = [tf.TensorArray(o.dtype, size=steps, infer_shape=False,
                           element_shape=tf.TensorShape(o.shape))
            for o in outputs]
  for i in tf.range(steps):
    out = model(x[i * batch_size:(i + 1) * batch_size], training=False)
    if not isinstance(out, (list, tuple)):
      out = [out]
    arrays = [a.write(i, o) for a, o in zip(arrays, out)]
  return [a.concat() for a in arrays]


def evaluate(logits: tf.Tensor, labels: tf.Tensor):
  """OrderedDict(loss_sum, correct, count) of CE and accuracy, float32."""
  ce = losses.ce_per_sample(labels, logits)
  correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                     tf.cast(labels, tf.int32))
  return collections.OrderedDict(
      loss_sum=tf.reduce_sum(ce),
      correct=tf.reduce_sum(tf.cast(correct, tf.float32)),
      count=tf.cast(tf.size(labels), tf.float32))


def model_weights(model: tf.keras.Model) -> collections.OrderedDict:
  """OrderedDict(trainable=[...], non_trainable=[...]) of its variables."""
  return collections.OrderedDict(
      trainable=list(model.trainable_variables),
      non_trainable=list(model.non_trainable_variables))


def assign_weights(model: tf.keras.Model, weights) -> None:
  """Assigns a `model_weights`-shaped structure of tensors to `model`."""
  tf.nest.map_structure(lambda v, t: v.assign(t), model_weights(model),
                        weights)


def read_weights(model: tf.keras.Model) -> collections.OrderedDict:
  """The current values of `model_weights(model)` as tensors."""
  return tf.nest.map_structure(tf.identity, model_weights(model))
