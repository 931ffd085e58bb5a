"""Sample-level DP: local DP-SGD as a TFF client work (`dp.mode=sample`).

Each local step is DP-SGD (Abadi et al. 2016) with tensorflow-privacy's
Gaussian sum query, exactly as its `DPKerasSGDOptimizer` computes gradients:

* the batch of b examples is cut into microbatches of k = B / m examples
  (m = `dp.microbatches`, 0 = one example per microbatch; the last batch of a
  client may be partial and then has ⌈b/k⌉ microbatches);
* the gradient of each microbatch's mean loss comes from one
  `GradientTape.jacobian` of the microbatch losses;
* `tfp.GaussianSumQuery(l2_norm_clip=C, stddev=σC)` clips each microbatch
  gradient to L2 norm ≤ C (`accumulate_record`), sums them and adds
  N(0, σ²C²) per coordinate (`get_noised_result`);
* the noisy sum is divided by the number of microbatches and applied with the
  client optimizer (SGD with `client.learning_rate`, `client.momentum`).

The Keras DP optimizer itself is not used because a Keras optimizer's slot
variables cannot be created inside TFF's dataset-reduce training loop; the
query is the same object it uses. The loss is the task's: sparse categorical
cross-entropy on the model's logits, per example.

The client reports weight 1 (uniform: the aggregation weight would otherwise
be the client's dataset size, which its data determines) or 0 with a zero
update if training produced a non-finite update, like TFF's client work.
The builder only uses `task.model_fn`, so Federated Dropout can call it with
a submodel task. DP noise is drawn from TensorFlow's unseeded RNG on purpose:
noise derived from a public config seed could be subtracted by anyone who
knows it (so, unlike everything else, DP runs are not bit-reproducible).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_compress.learning import client_works
from tff_compress.privacy import settings

_loss = tf.keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=tf.keras.losses.Reduction.NONE)


def microbatch_size(batch_size: int, microbatches: int) -> int:
  """Examples per microbatch: B / m (m = 0 means m = B)."""
  m = microbatches or batch_size
  if batch_size % m:
    raise ValueError(f'batch size {batch_size} is not divisible by '
                     f'{m} microbatches')
  return batch_size // m


def dp_gradients(model, batch, clip: float, noise_multiplier: float,
                 examples_per_microbatch: int):
  """(noisy mean of clipped microbatch gradients, batch size).

  Runs one forward pass through `model.forward_pass` (so the model's
  metrics see the batch) and differentiates per microbatch.
  """
  trainable = model.trainable_variables
  k = examples_per_microbatch
  with tf.GradientTape() as tape:
    output = model.forward_pass(batch, training=True)
    per_example = _loss(batch['y'], output.predictions)
    b = tf.shape(per_example)[0]
    num_microbatches = (b + k - 1) // k
    microbatch_losses = tf.math.unsorted_segment_mean(
        per_example, tf.range(b) // k, num_microbatches)
  jacobians = tape.jacobian(microbatch_losses, trainable,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
  query = tfp.GaussianSumQuery(l2_norm_clip=clip,
                               stddev=clip * noise_multiplier)
  global_state = query.initial_global_state()
  params = query.derive_sample_params(global_state)
  sample_state = query.initial_sample_state(
      [tf.TensorSpec(v.shape, v.dtype) for v in trainable])

  def body(i, state):
    record = [j[i] for j in jacobians]
    return i + 1, query.accumulate_record(params, state, record)

  _, sample_state = tf.while_loop(
      lambda i, _: i < num_microbatches, body,
      (tf.constant(0), sample_state))
  noised, _, _ = query.get_noised_result(sample_state, global_state)
  denominator = tf.cast(num_microbatches, tf.float32)
  return [g / denominator for g in noised], b


def build_dpsgd_client_work(
    task, model_weights_type, dp: settings.DpSettings, *,
    learning_rate: float, momentum: float, batch_size: int,
) -> tff.learning.templates.ClientWorkProcess:
  """DP-SGD client work with local SGD(M) at `learning_rate`, `momentum`.

  Args:
    task: Uses only `task.model_fn`.
    model_weights_type: The `ModelWeights` type the distributor delivers.
    dp: Reads `clip`, `noise_multiplier`, `microbatches`.
    learning_rate: Local SGD step size.
    momentum: Local SGD momentum (0 = plain SGD).
    batch_size: Examples per local batch B (microbatches divide it).
  """
  clip = float(dp.clip)
  sigma = float(dp.noise_multiplier)
  k = microbatch_size(batch_size, dp.microbatches)
  optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=learning_rate, momentum=momentum or None)

  with tf.Graph().as_default():
    probe = task.model_fn()
    metrics_aggregation_fn = tff.learning.metrics.sum_then_finalize(
        probe.metric_finalizers())
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(
        probe.input_spec))

  @tff.tensorflow.computation(model_weights_type, data_type)
  def client_update(initial_weights, dataset):
    model = task.model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
    specs = tuple(tf.TensorSpec(v.shape, v.dtype)
                  for v in model.trainable_variables)

    @tf.function
    def train():
      def reduce_fn(opt_state, batch):
        gradients, _ = dp_gradients(model, batch, clip, sigma, k)
        variables = tuple(model.trainable_variables)
        opt_state, updated = optimizer.next(
            opt_state, tuple(tf.identity(v) for v in variables),
            tuple(gradients))
        for v, u in zip(variables, updated):
          v.assign(u)
        return opt_state

      dataset.reduce(optimizer.initialize(specs), reduce_fn)

      delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                                    weights.trainable)
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(d))
                              for d in tf.nest.flatten(delta)])
      if not finite:  # no NaN metrics either (as TFF's client work)
        model.reset_metrics()
      delta = tf.nest.map_structure(
          lambda d: tf.where(finite, d, tf.zeros_like(d)), delta)
      # Read inside the function so the reads follow training.
      return (delta, tf.cast(finite, tf.float32),
              model.report_local_unfinalized_metrics())

    delta, weight, metrics = train()
    return (tff.learning.templates.ClientResult(update=delta,
                                                update_weight=weight),
            metrics)

  return client_works.stateless_client_work(
      client_update, model_weights_type, data_type, metrics_aggregation_fn)
