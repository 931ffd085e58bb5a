"""FedGKT's ResNets: the edge/server split, counts by hand, the ratios."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_compress.models import flops
from tff_compress.models import registry
from tff_compress.models import resnet


class SplitTest(parameterized.TestCase):

  @parameterized.parameters(((28, 28, 1), 11), ((32, 32, 3), 20))
  def test_stem_then_server_equals_whole_network(self, shape, depth):
    # Built independently (different seeds), then the whole network's
    # weights are copied into the halves by layer name.
    whole = resnet.build_resnet(shape, 10, depth, seed=1)
    edge = resnet.build_edge_model(shape, 10, blocks=2, seed=2)
    server = resnet.build_server_model(shape, 10, depth, seed=3)
    # Give the batch-norm layers non-trivial moving statistics first.
    x = np.random.default_rng(0).uniform(size=(6, *shape)).astype(np.float32)
    whole(x, training=True)
    copied_stem = resnet.copy_weights_by_name(
        whole, edge, only=['stem_conv', 'stem_bn'])
    copied_server = resnet.copy_weights_by_name(whole, server)
    self.assertEqual(copied_stem, ['stem_conv', 'stem_bn'])
    self.assertEqual(len(copied_server) + 2,
                     len([l for l in whole.layers if l.weights]))
    for training in (False, True):
      _, features = edge(x, training=training)
      self.assertEqual(features.shape[1:], resnet.feature_shape(shape))
      np.testing.assert_allclose(
          server(features, training=training), whole(x, training=training),
          rtol=1e-4, atol=1e-5)

  def test_edge_params_by_hand(self):
    # stem 3x3xCx16 + BN(16) gamma/beta; block 1 (16 -> 16 planes -> 64,
    # with a 1x1 projection shortcut): 256 + 2304 + 1024 + 1024 conv weights
    # + BN 32 + 32 + 128 + 128; block 2 (64 -> 16 -> 64): 1024 + 2304 + 1024
    # + BN 32 + 32 + 128; classifier 64 x 10 + 10.
    blocks = (256 + 2304 + 1024 + 1024 + 32 + 32 + 128 + 128 +
              1024 + 2304 + 1024 + 32 + 32 + 128)
    for channels in (1, 3):
      edge = registry.build_model('resnet8', (28, 28, channels), 10)
      self.assertEqual(flops.count_params(edge),
                       9 * channels * 16 + 32 + blocks + 650)

  def test_depths_and_errors(self):
    for depth, blocks in ((20, 2), (56, 6), (110, 12)):
      model = registry.build_model(f'resnet{depth}', (28, 28, 1), 10)
      convs = [l for l in model.layers
               if isinstance(l, tf.keras.layers.Conv2D)
               and 'down' not in l.name]
      # Weighted layers on the main path: stem + 3 convs per block + dense.
      self.assertEqual(len(convs) + 1, depth)
      self.assertEqual(len(convs), 1 + 9 * blocks)
    with self.assertRaisesRegex(ValueError, r'depth 30 .*\[11, 20, 56, 110\]'):
      resnet.build_resnet((28, 28, 1), 10, 30)

  def test_edge_savings_for_resnet56_and_110(self):
    # The paper reports 54-105x fewer parameters and 9-17x fewer FLOPs on the
    # edge. Counting batch norm and the residual adds too (models/flops.py),
    # ResNet-56 on CIFAR-shaped input comes to 8.9x (9.05x on 28x28x1).
    edge = registry.build_model('resnet8', (32, 32, 3), 10)
    for depth, min_params, min_flops in ((56, 55, 8.85), (110, 108, 17)):
      whole = registry.build_model(f'resnet{depth}', (32, 32, 3), 10)
      param_ratio = flops.count_params(whole) / flops.count_params(edge)
      flop_ratio = (flops.training_flops_per_example(whole) /
                    flops.training_flops_per_example(edge))
      self.assertGreaterEqual(param_ratio, min_params, depth)
      self.assertGreaterEqual(flop_ratio, min_flops, depth)


if __name__ == '__main__':
  absltest.main()
