"""Explicit builtin-op backward passes == TensorFlow's autodiff."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from mobile_export import layers
from tff_compress.models import registry as model_registry


def _check_grads(test, model, batch=6, seed=0, x=None, loss_and_grads=None):
  """Loss, every gradient and the logits of `model`'s network == TF's.

  `loss_and_grads(x, y, weights)` defaults to the network's own (eager).
  """
  net = layers.network_from_keras(model)
  rng = np.random.default_rng(seed)
  if x is None:
    x = rng.random((batch,) + net.input_shape).astype(np.float32)
  y = rng.integers(0, net.num_classes, len(x)).astype(np.int32)
  weights = [tf.constant(w) for w in model.get_weights()]
  loss_and_grads = loss_and_grads or net.loss_and_grads
  loss, grads = loss_and_grads(tf.constant(x), tf.constant(y), weights)
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

  @parameterized.product(padding=('same', 'valid'), stride=(1, 2),
                         separable=(True, False))
  def test_conv_padding_and_stride(self, padding, stride, separable):
    # Odd sizes: VALID stride 2 leaves unread rows; SAME pads unevenly; the
    # pooling crops a row. Both correlation forms, for the forward pass
    # (stride 1) and for the input gradient (strides dilate it first).
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer((19, 16, 3)),
        tf.keras.layers.Conv2D(4, 3, stride, padding, activation='relu'),
        tf.keras.layers.Conv2D(5, (4, 3), stride, padding, activation='relu'),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(7),
    ])
    depth = 0 if separable else 10**9
    with mock.patch.object(layers, 'SEPARABLE_MIN_DEPTH', depth):
      _check_grads(self, model)

  @parameterized.named_parameters(
      ('relu', 'relu', None, True),
      ('relu_rescaled', 'relu', 2.5, True),
      ('linear', None, None, True),
      ('negative_scale_not_fused', 'relu', -0.5, False))
  def test_conv_then_pool(self, activation, scale, fused):
    stack = [tf.keras.layers.InputLayer((11, 9, 2)),
             tf.keras.layers.Conv2D(6, 3, padding='same',
                                    activation=activation)]
    if scale is not None:
      stack.append(tf.keras.layers.Rescaling(scale))
    stack += [tf.keras.layers.MaxPool2D(2), tf.keras.layers.Flatten(),
              tf.keras.layers.Dense(4)]
    model = tf.keras.Sequential(stack)
    kinds = [type(layer).__name__
             for layer in layers.network_from_keras(model).layers]
    self.assertEqual(kinds, ['Conv2D', 'Flatten', 'Dense'] if fused else
                     ['Conv2D', 'Scale', 'MaxPool', 'Flatten', 'Dense'])
    _check_grads(self, model)

  def test_fused_pooling_routes_ties_to_the_first_maximum(self):
    # Zero input patches give every cell of a window the conv's bias: with
    # a positive bias the ReLU keeps the tie, and TF's MaxPoolGrad sends
    # the gradient to the window's first cell.
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer((8, 8, 1)),
        tf.keras.layers.Conv2D(3, 3, padding='same', activation='relu',
                               bias_initializer=tf.keras.initializers.Constant(
                                   0.3)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3),
    ])
    x = np.zeros((4, 8, 8, 1), np.float32)
    x[:, 5:, 5:, :] = np.random.default_rng(4).random((4, 3, 3, 1))
    _check_grads(self, model, x=x)

  def test_one_graph_takes_any_batch_size(self):
    model = model_registry.build_model('caldas_cnn', (28, 28, 1), 10)
    net = layers.network_from_keras(model)
    fn = tf.function(
        net.loss_and_grads,
        input_signature=[tf.TensorSpec([None, 28, 28, 1]),
                         tf.TensorSpec([None], tf.int32),
                         [tf.TensorSpec(s) for s in net.weight_shapes]])
    for rows in (1, 7, 32):
      _check_grads(self, model, batch=rows, seed=rows, loss_and_grads=fn)
    self.assertEqual(fn.experimental_get_tracing_count(), 1)

  def test_max_pool_routes_to_the_first_maximum(self):
    # Ties inside pooling windows (integer inputs through a ones kernel) and
    # a cropped edge (odd size): TF's MaxPoolGrad picks the first maximum.
    # The negative rescaling keeps the pooling a layer of its own (not
    # fused), and the convolution before it makes its routing matter.
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer((7, 9, 2)),
        tf.keras.layers.Conv2D(2, 1, kernel_initializer='ones'),
        tf.keras.layers.Rescaling(-1.0),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3),
    ])
    self.assertIsInstance(layers.network_from_keras(model).layers[2],
                          layers.MaxPool)
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
