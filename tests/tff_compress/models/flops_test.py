"""Parameter and FLOP counts against hand computations."""

from absl.testing import absltest
import tensorflow as tf

from tff_compress.models import flops
from tff_compress.models import registry


class ModelsTest(absltest.TestCase):

  def test_caldas_cnn_parameter_counts(self):
    # conv1 832 + conv2 51,264 + dense 3136*512+512 + logits 512*C+C.
    for classes, expected in ((10, 1_663_370), (62, 1_690_046)):
      model = registry.build_model('caldas_cnn', (28, 28, 1), classes)
      self.assertEqual(flops.count_params(model), expected)
      self.assertEqual(model.output_shape, (None, classes))

  def test_same_seed_same_weights(self):
    a = registry.build_model('caldas_cnn', (28, 28, 1), 10, seed=3)
    b = registry.build_model('caldas_cnn', (28, 28, 1), 10, seed=3)
    c = registry.build_model('caldas_cnn', (28, 28, 1), 10, seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
      self.assertTrue((wa == wb).all())
    self.assertFalse((a.get_weights()[0] == c.get_weights()[0]).all())

  def test_unknown_model_names_the_key(self):
    with self.assertRaisesRegex(registry.UnknownModelError,
                                r"model.name='nope'.*caldas_cnn"):
      registry.build_model('nope', (28, 28, 1), 10)

  def test_dense_flops_by_hand(self):
    model = registry.build_model('dense', (4, 4, 1), 3, hidden=(8,))
    # dense1 16->8: fwd 2*16*8+8=264, wgrad 264, no input grad (first layer)
    # logits 8->3: fwd 2*8*3+3=51, wgrad 51, igrad 2*8*3=48
    self.assertEqual(flops.forward_flops_per_example(model), 264 + 51)
    self.assertEqual(flops.training_flops_per_example(model),
                     264 * 2 + 51 * 2 + 48)

  def test_conv_flops_by_hand(self):
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(6, 6, 2)),
        tf.keras.layers.Conv2D(3, 3, padding='valid', name='c'),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(2, name='d'),
    ])
    # conv: out 4x4, macs 3*3*2*3*16 = 864 -> fwd 1728 + bias 48 = 1776
    # dense: 48 -> 2: fwd 2*48*2 + 2 = 194, igrad 192
    per_layer = {l.name: l for l in flops.layer_flops(model)}
    self.assertEqual(per_layer['c'].forward, 1776)
    self.assertEqual(per_layer['c'].input_grad, 0)
    self.assertEqual(per_layer['d'].forward, 194)
    self.assertEqual(per_layer['d'].input_grad, 192)
    self.assertEqual(flops.training_flops_per_example(model),
                     1776 * 2 + 194 * 2 + 192)

  def test_batch_norm_and_add_flops_by_hand(self):
    inputs = tf.keras.Input((4, 4, 2))
    c = tf.keras.layers.Conv2D(3, 1, use_bias=False, name='c')(inputs)
    b = tf.keras.layers.BatchNormalization(name='b')(c)
    a = tf.keras.layers.Add(name='a')([b, c, c])
    model = tf.keras.Model(inputs, a)
    per_layer = {l.name: l for l in flops.layer_flops(model)}
    # conv: 1x1x2x3 over 16 positions = 96 MACs -> 192 forward, no input grad.
    self.assertEqual(per_layer['c'].forward, 192)
    # BN over 4*4*3 = 48 elements: 4/elem forward, 3 weight grad, 6 input.
    self.assertEqual((per_layer['b'].forward, per_layer['b'].weight_grad,
                      per_layer['b'].input_grad), (192, 144, 288))
    # Add of 3 tensors of 48 elements: 2 adds per element, free backward.
    self.assertEqual((per_layer['a'].forward, per_layer['a'].weight_grad,
                      per_layer['a'].input_grad), (96, 0, 0))
    self.assertEqual(flops.training_flops_per_example(model),
                     192 * 2 + (192 + 144 + 288) + 96)

  def test_caldas_training_flops_magnitude(self):
    model = registry.build_model('caldas_cnn', (28, 28, 1), 10)
    fwd = flops.forward_flops_per_example(model)
    # conv1 2*25*32*784 + conv2 2*25*32*64*196 + dense 2*3136*512 + ...
    by_hand = (2 * 25 * 1 * 32 * 784 + 32 * 784 +
               2 * 25 * 32 * 64 * 196 + 64 * 196 +
               2 * 3136 * 512 + 512 + 2 * 512 * 10 + 10)
    self.assertEqual(fwd, by_hand)


if __name__ == '__main__':
  absltest.main()
