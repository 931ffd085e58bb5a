"""Explicit builtin-op backward passes == TensorFlow's autodiff."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from mobile_export import layers
from tff_compress.models import registry as model_registry


def _check_grads(test, model, batch=6, seed=0, x=None):
  net = layers.network_from_keras(model)
  rng = np.random.default_rng(seed)
  if x is None:
    x = rng.random((batch,) + net.input_shape).astype(np.float32)
  y = rng.integers(0, net.num_classes, len(x)).astype(np.int32)
  weights = [tf.constant(w) for w in model.get_weights()]
  loss, grads = net.loss_and_grads(tf.constant(x), tf.constant(y), weights)
  with tf.GradientTape() as tape:
    want = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y, model(x))
  want_grads = tape.gradient(want, model.trainable_weights)
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
  test.assertLen(grads, len(want_grads))
  for g, w in zip(grads, want_grads):
    test.assertEqual(tuple(g.shape), tuple(w.shape))
    np.testing.assert_allclose(g, w, rtol=1e-4,
                               atol=1e-5 * float(tf.reduce_max(tf.abs(w))))
  # Float32 sums in another order: absolute error relative to the largest
  # logit (the separable convolution adds its kernel rows last).
  want_logits = model(x).numpy()
  np.testing.assert_allclose(net.logits(tf.constant(x), weights), want_logits,
                             rtol=1e-5, atol=1e-6 * np.abs(want_logits).max())


class LayersTest(parameterized.TestCase):

  def test_registered_models(self):
    _check_grads(self, model_registry.build_model('caldas_cnn', (28, 28, 1),
                                                  10))
    _check_grads(self, model_registry.build_model('dense', (28, 28, 1), 10))

  @parameterized.product(padding=('same', 'valid'), stride=(1, 2))
  def test_conv_padding_and_stride(self, padding, stride):
    # Odd sizes: VALID stride 2 leaves unread rows; SAME pads unevenly.
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer((19, 16, 3)),
        tf.keras.layers.Conv2D(4, 3, stride, padding, activation='relu'),
        tf.keras.layers.Conv2D(5, (4, 3), stride, padding, activation='relu'),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(7),
    ])
    _check_grads(self, model)

  def test_max_pool_routes_to_the_first_maximum(self):
    # Ties inside pooling windows (an input of few distinct values) and a
    # cropped edge (odd size): TF's MaxPoolGrad picks the first maximum.
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer((7, 9, 2)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3),
    ])
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (4, 7, 9, 2)).astype(np.float32)
    _check_grads(self, model, x=x)

  def test_rescaling_of_dropout_submodels(self):
    model = model_registry.build_model(
        'caldas_cnn', (28, 28, 1), 10, widths={'conv1': 8, 'dense1': 64},
        scales={'conv1': 4.0, 'dense1': 8.0})
    _check_grads(self, model, batch=3)

  def test_padding_rows_do_not_count(self):
    model = model_registry.build_model('dense', (28, 28, 1), 10)
    net = layers.network_from_keras(model)
    rng = np.random.default_rng(2)
    x = rng.random((5, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 5).astype(np.int32)
    w = [tf.constant(v) for v in model.get_weights()]
    loss3, grads3 = net.loss_and_grads(x[:3], y[:3], w)
    padded_y = np.concatenate([y[:3], [-1, -1]]).astype(np.int32)
    loss5, grads5 = net.loss_and_grads(x, padded_y, w)
    np.testing.assert_allclose(loss5, loss3, rtol=1e-6)
    for a, b in zip(grads5, grads3):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

  @parameterized.named_parameters(
      ('avg_pool', tf.keras.layers.AveragePooling2D(2), 'AveragePooling2D'),
      ('tanh', tf.keras.layers.Conv2D(2, 3, activation='tanh'), 'tanh'),
      ('batch_norm', tf.keras.layers.BatchNormalization(),
       'BatchNormalization'))
  def test_unsupported_layers_are_named(self, layer, text):
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer((8, 8, 1)), layer,
        tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
    with self.assertRaisesRegex(layers.UnsupportedLayerError, text):
      layers.network_from_keras(model)


if __name__ == '__main__':
  absltest.main()
