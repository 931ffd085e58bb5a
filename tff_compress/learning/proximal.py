"""FedProx's client work (Li et al. 2020, "Federated Optimization in
Heterogeneous Networks").

Each client minimises its loss plus a proximal term that keeps it near the
model it received, w₀:

  h(w) = F_k(w) + (mu/2) ‖w − w₀‖²,   ∇h(w) = ∇F_k(w) + mu (w − w₀),

with local SGD(M) steps on ∇h over its batches, and reports the model delta
Δ = w₀ − w like TFF's model-delta client work (example-weighted or uniform;
a non-finite Δ is zeroed with weight 0 and its metrics dropped). mu = 0 is
exactly TFF's model-delta client work (the same ops in the same order:
tested bit for bit).

Why not TFF's own: TFF 0.87's proximal client work (the one
`tff.learning.algorithms.build_weighted_fed_prox` composes) adds
mu (w₀ − w) to the gradient — the proximal term's gradient with the wrong
sign — so each step pushes the client *away* from w₀ and a larger mu makes
client drift worse. A test pins that behaviour of the installed TFF
(`tests/tff_compress/learning/proximal_test.py`); when it fails after an
upgrade, TFF's client work can replace this one.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.learning import client_works


def build_proximal_client_work(
    model_fn, model_weights_type, *, proximal_strength: float,
    optimizer: tff.learning.optimizers.Optimizer,
    client_weighting: tff.learning.ClientWeighting,
) -> tff.learning.templates.ClientWorkProcess:
  """FedProx local training (module docstring).

  Args:
    model_fn: No-arg function returning a `tff.learning.models.VariableModel`.
    model_weights_type: The `ModelWeights` type the distributor delivers.
    proximal_strength: mu >= 0.
    optimizer: The client optimizer (TFF's functional optimizers).
    client_weighting: `NUM_EXAMPLES` (examples trained) or `UNIFORM` (1).

  Raises:
    ValueError: `proximal_strength` is negative or not finite.
  """
  mu = float(proximal_strength)
  if not mu >= 0 or mu == float('inf'):
    raise ValueError(f'proximal_strength must be a finite number >= 0, got '
                     f'{proximal_strength!r}')
  with tf.Graph().as_default():
    probe = model_fn()
    metrics_aggregation_fn = tff.learning.metrics.sum_then_finalize(
        probe.metric_finalizers())
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(
        probe.input_spec))

  @tff.tensorflow.computation(model_weights_type, data_type)
  def client_update(initial_weights, dataset):
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)

    @tf.function
    def train():
      tf.nest.map_structure(lambda v, t: v.assign(t), weights,
                            initial_weights)
      anchor = tf.nest.flatten(initial_weights.trainable)

      def reduce_fn(state, batch):
        num_examples, opt_state = state
        with tf.GradientTape() as tape:
          output = model.forward_pass(batch, training=True)
        gradients = tf.nest.flatten(tape.gradient(output.loss,
                                                  weights.trainable))
        variables = tf.nest.flatten(weights.trainable)
        if mu > 0:
          gradients = [g + mu * (v - w0)
                       for g, v, w0 in zip(gradients, variables, anchor)]
        opt_state, updated = optimizer.next(opt_state, tuple(variables),
                                            tuple(gradients))
        for v, u in zip(variables, updated):
          v.assign(u)
        if output.num_examples is None:
          num_examples += tf.shape(output.predictions, out_type=tf.int64)[0]
        else:
          num_examples += tf.cast(output.num_examples, tf.int64)
        return num_examples, opt_state

      specs = tuple(tf.TensorSpec(v.shape, v.dtype)
                    for v in tf.nest.flatten(weights.trainable))
      num_examples, _ = dataset.reduce(
          (tf.zeros([], tf.int64), optimizer.initialize(specs)), reduce_fn)
      delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                                    weights.trainable)
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(d))
                              for d in tf.nest.flatten(delta)])
      if not finite:  # no NaN metrics either (as TFF's client work)
        model.reset_metrics()
      delta = tf.nest.map_structure(
          lambda d: tf.where(finite, d, tf.zeros_like(d)), delta)
      if client_weighting == tff.learning.ClientWeighting.NUM_EXAMPLES:
        weight = tf.cast(num_examples, tf.float32)
      else:
        weight = tf.constant(1.0)
      weight = tf.where(finite, weight, 0.0)
      return delta, weight, model.report_local_unfinalized_metrics()

    delta, weight, metrics = train()
    return (tff.learning.templates.ClientResult(update=delta,
                                                update_weight=weight),
            metrics)

  return client_works.stateless_client_work(
      client_update, model_weights_type, data_type, metrics_aggregation_fn)
