"""The multinomial logistic regression: shapes, FLOPs by hand, it fits."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tff_compress.data import synthetic
from tff_compress.models import flops
from tff_compress.models import linear
from tff_compress.models import registry


class LogisticTest(absltest.TestCase):

  def test_parameters_and_flops_by_hand(self):
    model = registry.build_model('logistic', (synthetic.DIM,),
                                 synthetic.NUM_CLASSES)
    self.assertEqual(flops.count_params(model), 60 * 10 + 10)
    # One dense layer 60 -> 10, the first layer: forward 2*60*10 + 10 bias
    # adds = 1210, weight gradient 1210, no input gradient.
    self.assertEqual(flops.forward_flops_per_example(model), 1210)
    self.assertEqual(flops.training_flops_per_example(model), 2420)
    image = registry.build_model('logistic', (28, 28, 1), 10)
    self.assertEqual(flops.count_params(image), 784 * 10 + 10)
    self.assertEqual(flops.training_flops_per_example(image),
                     2 * (2 * 784 * 10 + 10))

  def test_logits_are_affine_in_the_flattened_input(self):
    model = linear.build_logistic((3, 2), 4, seed=1)
    kernel, bias = model.get_weights()
    self.assertEqual(kernel.shape, (6, 4))
    np.testing.assert_array_equal(bias, np.zeros(4, np.float32))
    x = np.random.default_rng(0).standard_normal((5, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(model(x).numpy(),
                               x.reshape(5, 6) @ kernel + bias, rtol=1e-5,
                               atol=1e-6)

  def test_seeded_initialisation(self):
    a = linear.build_logistic((60,), 10, seed=3).get_weights()[0]
    b = linear.build_logistic((60,), 10, seed=3).get_weights()[0]
    c = linear.build_logistic((60,), 10, seed=4).get_weights()[0]
    np.testing.assert_array_equal(a, b)
    self.assertFalse(np.array_equal(a, c))

  def test_no_layer_to_resize(self):
    with self.assertRaisesRegex(ValueError, r'logistic has no hidden layer'):
      linear.build_logistic((60,), 10, widths={'dense1': 3})
    with self.assertRaisesRegex(ValueError, r'logistic has no hidden layer'):
      linear.build_logistic((60,), 10, scales={'dense1': 2.0})

  def test_fits_iid_synthetic_data(self):
    # IID synthetic labels are argmax(x W + b) of one linear model, which
    # this model represents exactly: centralised training separates them.
    gen = synthetic.SyntheticGenerator(
        20, 0.0, 0.0, iid=True, size_law=synthetic.SIZE_LAWS['leaf'], seed=0)
    x, y = gen.held_out(0, 10000)
    model = linear.build_logistic((synthetic.DIM,), synthetic.NUM_CLASSES)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(0.05),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=['accuracy'])
    model.fit(x[:8000], y[:8000], batch_size=100, epochs=20, verbose=0)
    _, accuracy = model.evaluate(x[8000:], y[8000:], verbose=0)
    majority = np.bincount(y[8000:]).max() / 2000
    self.assertLess(majority, 0.4)
    self.assertGreater(accuracy, 0.9)


if __name__ == '__main__':
  absltest.main()
