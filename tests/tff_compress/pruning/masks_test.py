"""Mask layouts: tfmot's masks, exact kept counts, monotone and idempotent
updates, lossless compact/expand, units as a real smaller model."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import (
    pruning_utils)

from tff_compress.data import federated_data
from tff_compress.learning import task as task_lib
from tff_compress.models import flops
from tff_compress.models import registry as model_registry
from tff_compress.pruning import masks
from tff_compress.pruning import settings as pruning_settings
from tff_compress.runtime import local as local_runtime


def setUpModule():
  # TFF's import-time default context holds an idle worker factory whose
  # destructor fails at interpreter exit; nothing here runs TFF.
  tff.framework.set_default_context(local_runtime.closed_context())


def _caldas(seed=0):
  return model_registry.build_model('caldas_cnn', (28, 28, 1), 10, seed=seed)


def _settings(**kw):
  return pruning_settings.PruningSettings(**{'target': 0.5, **kw})


def _trained_like(model, seed=0):
  """The model's weights plus noise: distinct magnitudes, no zeros."""
  rng = np.random.default_rng(seed)
  return [w.numpy() + rng.normal(0, 0.01, w.shape).astype(np.float32)
          for w in model.trainable_weights]


def _count(mask):
  return int(np.sum(np.asarray(mask)))


def _tfmot_pruned_kernel(kernel, sparsity, block=(1, 1)):
  """tfmot's own mask for a Dense kernel: one pruning step, as
  `prune_low_magnitude` with `ConstantSparsity` computes it."""
  layer = tf.keras.layers.Dense(kernel.shape[1], use_bias=False)
  model = tf.keras.Sequential([tf.keras.layers.InputLayer((kernel.shape[0],)),
                               layer])
  layer.kernel.assign(kernel)
  pruned = tfmot.sparsity.keras.prune_low_magnitude(
      model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(
          sparsity, begin_step=0, frequency=1), block_size=block)
  pruned.compile(optimizer=tf.keras.optimizers.SGD(0.0),
                 loss=tf.keras.losses.MeanSquaredError())
  x = np.zeros([1, kernel.shape[0]], np.float32)
  pruned.fit(x, np.zeros([1, kernel.shape[1]], np.float32), verbose=0,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  return tfmot.sparsity.keras.strip_pruning(pruned).layers[0].kernel.numpy()


class KeptCountTest(absltest.TestCase):

  def test_tfmot_rounding(self):
    for n, s, want in ((10, 0.5, 5), (10, 0.45, 6), (3, 0.99, 1),
                       (1605632, 0.9, 160563), (800, 0.0, 800)):
      self.assertEqual(masks.kept_count(n, s), want, (n, s))


class ElementLayoutTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.model = _caldas()
    self.weights = _trained_like(self.model)

  def test_unstructured_equals_tfmot_and_keeps_exactly_k(self):
    layout = masks.build_layout(self.model, _settings(layers='dense1'))
    (i,) = layout.kernel_index
    mask, = layout.update(self.weights, layout.initial_masks(), 0.75)
    self.assertEqual(_count(mask), layout.kept(0.75)[0])
    expected = _tfmot_pruned_kernel(self.weights[i], 0.75) != 0
    np.testing.assert_array_equal(np.asarray(mask), expected)

  def test_block_equals_tfmot_block_pruning(self):
    layout = masks.build_layout(self.model, _settings(
        structure='block', block='16x1', layers='dense1'))
    (i,) = layout.kernel_index
    mask, = layout.update(self.weights, layout.initial_masks(), 0.9)
    m = np.asarray(mask)
    self.assertEqual(int(m.sum()), layout.kept(0.9)[0])
    # all or none of every 16x1 block
    blocks = m.reshape(3136 // 16, 16, 512)
    self.assertTrue(np.all(blocks.all(axis=1) | ~blocks.any(axis=1)))
    expected = _tfmot_pruned_kernel(self.weights[i], 0.9, (16, 1)) != 0
    np.testing.assert_array_equal(m, expected)

  def test_m_by_n_equals_tfmot(self):
    layout = masks.build_layout(self.model, _settings(structure='m_by_n'))
    self.assertEqual(layout.layers, ('conv2', 'dense1', 'logits'))
    new = layout.update(self.weights, layout.initial_masks(), 0.5)
    for i, mask, k in zip(layout.kernel_index, new, layout.kept(0.5)):
      w = tf.constant(self.weights[i])
      expected = pruning_utils.m_by_n_sparsity_mask_prepare(
          pruning_utils.generate_m_by_n_mask(
              pruning_utils.weights_rearrange(w), (2, 4)), w.shape)
      np.testing.assert_array_equal(np.asarray(mask),
                                    np.asarray(expected) > 0)
      self.assertEqual(_count(mask), k)
      self.assertTrue(bool(pruning_utils.is_pruned_m_by_n(
          w * tf.cast(mask, tf.float32), (2, 4))))

  @parameterized.parameters('unstructured', 'block')
  def test_updates_are_monotone_and_idempotent(self, structure):
    layout = masks.build_layout(self.model, _settings(
        structure=structure, layers='dense1' if structure == 'block' else ''))
    m1 = layout.update(self.weights, layout.initial_masks(), 0.3)
    # A masked coordinate with a large magnitude must stay masked.
    boosted = [w.copy() for w in self.weights]
    for i, m in zip(layout.kernel_index, m1):
      boosted[i][~np.asarray(m)] = 100.0
    m2 = layout.update(boosted, m1, 0.6)
    for a, b, k in zip(m1, m2, layout.kept(0.6)):
      a, b = np.asarray(a), np.asarray(b)
      self.assertFalse(np.any(b & ~a))
      self.assertEqual(int(b.sum()), k)
    m3 = layout.update(self.weights, m2, 0.6)
    for b, c in zip(m2, m3):
      np.testing.assert_array_equal(np.asarray(b), np.asarray(c))

  def test_compact_expand_and_bits_round_trip(self):
    layout = masks.build_layout(self.model, _settings())
    m = layout.update(self.weights, layout.initial_masks(), 0.5)
    projected = layout.project(self.weights, m)
    compact = layout.compact(projected, m, 0.5)
    for i, k in zip(layout.kernel_index, layout.kept(0.5)):
      self.assertEqual(tuple(compact[i].shape), (k,))
    for a, b in zip(layout.expand(compact, m, 0.5), projected):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    packed = [masks.pack(x) for x in m]
    self.assertEqual(sum(int(p.shape[0]) for p in packed),
                     layout.mask_message_bytes())
    # One bit per kernel weight (biases are not masked).
    self.assertEqual(layout.mask_message_bytes(),
                     (800 + 51200 + 1605632 + 5120) // 8)
    for p, x in zip(packed, m):
      np.testing.assert_array_equal(np.asarray(masks.unpack(p, x.shape)),
                                    np.asarray(x))
    report = layout.report([np.asarray(w) for w in projected])
    self.assertEqual(report.sparsity, 0.5)
    self.assertEqual(report.per_layer(), {'conv1': 0.5, 'conv2': 0.5,
                                          'dense1': 0.5, 'logits': 0.5})
    self.assertAlmostEqual(float(layout.sparsity(projected)), 0.5)

  def test_client_model_trains_under_the_mask(self):
    """tfmot's wrapper multiplies the kernel by the server's mask."""
    layout = masks.build_layout(self.model, _settings(layers='conv2,dense1'))
    m = layout.update(self.weights, layout.initial_masks(), 0.5)
    client = layout.wrap(_caldas(seed=5))
    compact = layout.compact(self.weights, m, 0.5)
    weights = layout.client_weights(
        tff.learning.models.ModelWeights(compact, []), m)
    for a, b in zip(weights.trainable, layout.project(self.weights, m)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Unmasked kernels in the variables: the wrapper must apply the mask.
    for v, value in zip(client.trainable_weights, self.weights):
      v.assign(value)
    for v, value in zip(client.non_trainable_weights, weights.non_trainable):
      v.assign(value)
    x = np.random.default_rng(1).random((3, 28, 28, 1), np.float32)
    got = client(x, training=True)
    reference = _caldas(seed=7)
    reference.set_weights([np.asarray(w) for w in layout.project(
        self.weights, m)])
    np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-5)
    # The update is cut back to the kept coordinates on the client.
    update = layout.client_update(self.weights, weights, 0.5)
    for i, k in zip(layout.kernel_index, layout.kept(0.5)):
      self.assertEqual(tuple(update[i].shape), (k,))


class UnitLayoutTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = _caldas()
    self.weights = _trained_like(self.model)
    self.layout = masks.build_layout(self.model, _settings(structure='units'))

  def test_keeps_the_units_with_the_largest_incoming_norm(self):
    self.assertEqual(self.layout.layers, ('conv1', 'conv2', 'dense1'))
    m = self.layout.update(self.weights, self.layout.initial_masks(), 0.75)
    for name, mask, kernel, bias in zip(
        self.layout.layers, m, self.weights[0:6:2], self.weights[1:6:2]):
      axes = tuple(range(kernel.ndim - 1))
      norm = np.sum(kernel**2, axis=axes) + bias**2
      k = masks.kept_count(norm.size, 0.75)
      np.testing.assert_array_equal(
          np.flatnonzero(np.asarray(mask)), np.sort(np.argsort(-norm)[:k]),
          err_msg=name)

  def test_projected_model_is_the_smaller_model(self):
    m = self.layout.update(self.weights, self.layout.initial_masks(), 0.5)
    projected = [np.asarray(w) for w in self.layout.project(self.weights, m)]
    full = _caldas(seed=3)
    full.set_weights(projected)
    sub_weights = self.layout.compact(projected, m, 0.5)
    widths = self.layout.plan(0.5).widths
    self.assertEqual(widths, {'conv1': 16, 'conv2': 32, 'dense1': 256})
    sub = model_registry.build_model('caldas_cnn', (28, 28, 1), 10,
                                     widths=widths)
    sub.set_weights([np.asarray(w) for w in sub_weights])
    x = np.random.default_rng(2).random((4, 28, 28, 1), np.float32)
    np.testing.assert_allclose(sub(x), full(x), rtol=1e-5, atol=1e-5)
    for a, b in zip(self.layout.expand(sub_weights, m, 0.5), projected):
      np.testing.assert_array_equal(np.asarray(a), b)
    # The dropped units' incoming, bias and outgoing weights are zero.
    report = self.layout.report(projected)
    self.assertEqual(report.per_layer(), {
        'conv1': 0.5, 'conv2': 0.75, 'dense1': 0.75, 'logits': 0.5})
    self.assertEqual(self.layout.mask_message_bytes(), 4 + 8 + 64)

  def test_client_task_is_smaller(self):
    data_shape = (28, 28, 1)

    def builder(widths, scales=None):
      del scales
      return model_registry.build_model('caldas_cnn', data_shape, 10,
                                        widths=widths)

    probe = builder({})
    task = task_lib.Task(lambda: builder({}),
                         federated_data.element_spec(data_shape),
                         flops.count_params(probe),
                         flops.training_flops_per_example(probe), builder)
    sub = self.layout.client_task(task, 0.5)
    self.assertLess(sub.num_params, task.num_params / 3.5)
    self.assertLess(sub.train_flops_per_example,
                    task.train_flops_per_example / 3)


if __name__ == '__main__':
  absltest.main()
