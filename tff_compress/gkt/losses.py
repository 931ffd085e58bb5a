"""The two losses of FedGKT: cross-entropy and temperature-scaled KL.

Both sides of FedGKT train a student on hard labels plus the soft labels
(logits) of the other side:

  client: L = CE(y, z_edge) + alpha * KD_T(z_server -> z_edge)
  server: L = CE(y, z_server) + beta * KD_T(z_edge -> z_server)

with the distillation loss of Hinton et al. 2015 as FedML implements it
(`fedml_api/distributed/fedgkt/utils.py`, ``KL_Loss``):

  KD_T(t -> s) = T^2 * (1 / B) * sum_i KL(softmax(t_i / T) || softmax(s_i / T))

averaged over the B samples of the batch ("batchmean"); the T^2 factor keeps
the gradient scale of the soft term independent of T. FedML adds 1e-7 to the
teacher probabilities before the log; we compute the log-probabilities
exactly with ``log_softmax`` instead.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf


def kl_per_sample(student_logits: tf.Tensor, teacher_logits: tf.Tensor,
                  temperature: float) -> tf.Tensor:
  """T^2 * KL(softmax(t/T) || softmax(s/T)) for each row, float32 [B]."""
  t = tf.convert_to_tensor(teacher_logits, tf.float32) / temperature
  s = tf.convert_to_tensor(student_logits, tf.float32) / temperature
  log_p = tf.nn.log_softmax(t, axis=-1)
  log_q = tf.nn.log_softmax(s, axis=-1)
  kl = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)
  return (temperature * temperature) * kl


def kd_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor,
            temperature: float,
            mask: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Batch-mean distillation loss KD_T over the rows where `mask` is 1.

  Args:
    student_logits: float32 [B, K].
    teacher_logits: float32 [B, K] (treated as constants).
    temperature: T > 0.
    mask: Optional float32 [B] of 0/1: rows without a teacher (a client's
      first round, before the server has sent logits) contribute nothing.

  Returns:
    Scalar: sum_i mask_i * T^2 * KL_i / sum_i mask_i (0 if no row counts).
  """
  per_sample = kl_per_sample(student_logits,
                             tf.stop_gradient(teacher_logits), temperature)
  if mask is None:
    return tf.reduce_mean(per_sample)
  mask = tf.cast(mask, tf.float32)
  return tf.math.divide_no_nan(tf.reduce_sum(per_sample * mask),
                               tf.reduce_sum(mask))


def ce_per_sample(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Sparse softmax cross-entropy of each row, float32 [B]."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int32), logits=logits)
