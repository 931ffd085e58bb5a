"""The baseline: TensorFlow's official on-device training recipe (needs Flex).

What an Android developer would otherwise ship, written as the TFLite
on-device training guide (tensorflow.org/lite/examples/on_device_training)
and Flower's Android example write it: a `tf.Module` holding the compiled
Keras model, a `train(x, y)` signature that runs the model under
`tf.GradientTape` and applies the Keras optimizer, `infer(x)`, and the
`parameters()` / `restore(a0..aN)` pair. It is converted with
TFLITE_BUILTINS + SELECT_TF_OPS and resource variables, so TensorFlow's
gradient kernels (Conv2DBackpropFilter, ReluGrad, MaxPoolGrad,
SparseSoftmaxCrossEntropyWithLogits, ...) run through the Flex delegate,
which `tf.lite.Interpreter` of a TensorFlow installation supplies and the
TF-free runtimes do not.

Same model, weights and optimizer as the builtin trainer: the run's Keras
model, SGD with the run's learning rate and momentum (Keras' momentum
update v = m v - lr g, w += v is TFF's a = m a + g, w -= lr a), the
sparse cross-entropy from logits with mean reduction. `step_benchmark`
times it against `trainer.tflite` in the same interpreter.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np
import tensorflow as tf


class FlexRecipe(tf.Module):
  """The guide's training module around a Keras classifier (logits out)."""

  def __init__(self, keras_model: tf.keras.Model,
               weights: Sequence[np.ndarray], learning_rate: float,
               momentum: float):
    """Compiles `keras_model` with the run's SGD(M) and loads `weights`.

    Args:
      keras_model: A built Keras model whose output is logits.
      weights: Its initial weights, Keras order.
      learning_rate: SGD step size.
      momentum: SGD momentum (0 = plain SGD).
    """
    super().__init__(name='flex_recipe')
    self.model = keras_model
    self.model.set_weights(list(weights))
    self.model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate, momentum=momentum),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # The guide's module creates the optimizer's slots on the first traced
    # `train`; building them here keeps them out of the signature's trace.
    self.model.optimizer.build(self.model.trainable_variables)
    shape = [None, *keras_model.input_shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, 'x'),
                                  tf.TensorSpec([None], tf.int32, 'y')])
    def train(x, y):
      with tf.GradientTape() as tape:
        logits = self.model(x, training=True)
        loss = self.model.loss(y, logits)
      gradients = tape.gradient(loss, self.model.trainable_variables)
      self.model.optimizer.apply_gradients(
          zip(gradients, self.model.trainable_variables))
      return {'loss': loss}

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, 'x')])
    def infer(x):
      return {'logits': self.model(x)}

    @tf.function(input_signature=[])
    def parameters():
      return {f'a{i}': w.read_value()
              for i, w in enumerate(self.model.weights)}

    @tf.function
    def restore(**params):
      for i, w in enumerate(self.model.weights):
        w.assign(params[f'a{i}'])
      return {f'a{i}': w.read_value()
              for i, w in enumerate(self.model.weights)}

    self.train, self.infer = train, infer
    self.parameters, self.restore = parameters, restore

  def signatures(self) -> dict:
    """Concrete functions keyed by signature name (Flower's names)."""
    return {
        'train': self.train.get_concrete_function(),
        'infer': self.infer.get_concrete_function(),
        'parameters': self.parameters.get_concrete_function(),
        'restore': self.restore.get_concrete_function(**{
            f'a{i}': tf.TensorSpec(w.shape, tf.float32, f'a{i}')
            for i, w in enumerate(self.model.weights)}),
    }


def convert(recipe: FlexRecipe) -> bytes:
  """The recipe converted as the guide does: builtins + Flex, resource vars."""
  signatures = recipe.signatures()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'saved_model')
    tf.saved_model.save(recipe, path, signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        path, signature_keys=list(signatures))
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.experimental_enable_resource_variables = True
    return converter.convert()
