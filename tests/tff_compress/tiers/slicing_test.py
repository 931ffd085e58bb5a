"""A tier's plan and slices: ⌈p n⌉ units, nested prefixes, deployable models."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.dropout import submodel
from tff_compress.models import registry as model_registry
from tff_compress.tiers import settings as tier_settings
from tff_compress.tiers import slicing as tier_slicing


def _model(name='caldas_cnn'):
  return model_registry.build_model(name, (28, 28, 1), 10, seed=0)


def _tier(spec):
  (tier,) = tier_settings.parse_mix(spec)
  return tier


class TierPlanTest(absltest.TestCase):

  def test_widths_are_the_ceiling_with_overrides(self):
    plan = tier_slicing.tier_plan(_model(), _tier('t:1:0.3:dense1=0.1'))
    # conv1 32 -> ceil(9.6) = 10, conv2 64 -> ceil(19.2) = 20,
    # dense1 512 -> ceil(51.2) = 52.
    self.assertEqual(plan.widths, {'conv1': 10, 'conv2': 20, 'dense1': 52})

  def test_full_width_is_the_identity_plan(self):
    plan = tier_slicing.tier_plan(_model(), _tier('t:1:1.0'))
    self.assertTrue(plan.is_identity)

  def test_unknown_layer(self):
    with self.assertRaisesRegex(submodel.SubmodelError, 'hidden layers'):
      tier_slicing.tier_plan(_model(), _tier('t:1:0.5:conv3=0.5'))


class NestedSlicingTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = _model()
    self.plan = tier_slicing.tier_plan(self.model, _tier('t:1:0.25'))
    self.slicing = tier_slicing.NestedSlicing(self.plan, seed=7, tier_index=2)
    self.trainable = [tf.constant(w.numpy())
                      for w in self.model.trainable_weights]

  def test_one_slice_for_every_client_and_round(self):
    self.assertEqual(self.slicing.max_key, 0)
    self.assertEqual(int(self.slicing.mask_key(tf.constant(5))), 0)
    a = self.slicing.gather(self.trainable, 1, 0)
    b = self.slicing.gather(self.trainable, 9, 0)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)

  def test_the_slice_is_the_first_units(self):
    sub = self.slicing.gather(self.trainable, 1, 0)
    kernel1, bias1, kernel2 = sub[0], sub[1], sub[2]
    np.testing.assert_array_equal(kernel1, self.trainable[0][..., :8])
    np.testing.assert_array_equal(bias1, self.trainable[1][:8])
    np.testing.assert_array_equal(kernel2, self.trainable[2][:, :, :8, :16])
    # dense1 after Flatten: rows (spatial s, channel c) = s * 64 + c, c < 16.
    rows = (np.arange(7 * 7)[:, None] * 64 + np.arange(16)[None]).ravel()
    np.testing.assert_array_equal(sub[4],
                                  tf.gather(self.trainable[4], rows)[:, :128])
    self.assertEqual([tuple(w.shape) for w in sub],
                     [tuple(s) for s in self.plan.sub_shapes()])

  def test_scatter_inverts_gather_and_coverage_marks_it(self):
    sub = self.slicing.gather(self.trainable, 3, 0)
    full = self.slicing.scatter(sub, 3, 0)
    cover = self.slicing.coverage(3, 0)
    for w, f, c in zip(self.trainable, full, cover):
      np.testing.assert_array_equal(f, w * c)
    self.assertEqual(sum(int(c.numpy().sum()) for c in cover),
                     sum(int(np.prod(s)) for s in self.plan.sub_shapes()))

  def test_narrower_tiers_are_nested_in_wider_ones(self):
    half = tier_slicing.tier_plan(self.model, _tier('t:1:0.5'))
    quarter_cover = self.slicing.coverage(1, 0)
    half_cover = tier_slicing.NestedSlicing(half, 7, 1).coverage(1, 0)
    for q, h in zip(quarter_cover, half_cover):
      self.assertTrue(np.all(q.numpy() <= h.numpy()))

  def test_codec_seeds_differ_by_round_and_tier(self):
    other = tier_slicing.NestedSlicing(self.plan, seed=7, tier_index=1)
    seeds = {tuple(self.slicing.codec_seed(1, 0).numpy()),
             tuple(self.slicing.codec_seed(2, 0).numpy()),
             tuple(other.codec_seed(1, 0).numpy())}
    self.assertLen(seeds, 3)


class RandomTierSlicingTest(absltest.TestCase):

  def test_random_is_federated_dropout_masks(self):
    plan = tier_slicing.tier_plan(_model(), _tier('t:1:0.5'))
    slicing = tier_slicing.build_slicing('random', plan, 3, 0, 10)
    self.assertIsInstance(slicing, dropout_slicing.MaskSlicing)
    self.assertEqual(slicing.max_key, 9)
    self.assertEqual(
        tier_slicing.build_slicing('random_per_round', plan, 3, 0,
                                   10).max_key, 0)

  def test_per_round_masks_of_the_tiers_are_nested(self):
    model = _model()
    masks = []
    for p in (0.25, 0.5, 1.0):
      plan = tier_slicing.tier_plan(model, _tier(f't:1:{p}'))
      slicing = tier_slicing.build_slicing('random_per_round', plan, 3, 0, 10)
      key = slicing.mask_key(tf.constant(4))
      masks.append({k: set(v.numpy()) for k, v in
                    slicing.kept(tf.constant(6, tf.int64), key).items()})
    for narrow, wide in zip(masks, masks[1:]):
      for layer in narrow:
        self.assertLessEqual(narrow[layer], wide[layer])


class DeploymentTest(absltest.TestCase):

  def test_nested_deploys_the_training_slice(self):
    plan = tier_slicing.tier_plan(_model(), _tier('t:1:0.5'))
    units = tier_slicing.deployed_units('nested', plan, seed=1)
    for layer, k in plan.widths.items():
      np.testing.assert_array_equal(units[layer], np.arange(k))

  def test_random_deploys_one_fixed_mask_nested_across_tiers(self):
    model = _model()
    deployed = []
    for p in (0.25, 0.5):
      plan = tier_slicing.tier_plan(model, _tier(f't:1:{p}'))
      a = tier_slicing.deployed_units('random', plan, seed=1)
      b = tier_slicing.deployed_units('random_per_round', plan, seed=1)
      for layer in a:
        np.testing.assert_array_equal(a[layer], b[layer])
        self.assertLen(a[layer], plan.widths[layer])
      deployed.append({k: set(v.numpy()) for k, v in a.items()})
    self.assertNotEqual(deployed[0]['dense1'], set(range(128)))
    for layer in deployed[0]:
      self.assertLessEqual(deployed[0][layer], deployed[1][layer])

  def test_deployed_weights_build_the_tier_model(self):
    model = _model()
    plan = tier_slicing.tier_plan(model, _tier('t:1:0.25'))
    units = tier_slicing.deployed_units('random', plan, seed=2)
    weights = tier_slicing.deployed_weights(
        plan, units, [w.numpy() for w in model.trainable_weights])
    small = model_registry.build_model('caldas_cnn', (28, 28, 1), 10,
                                       widths=plan.widths)
    small.set_weights(weights)  # shapes match the tier's model
    x = np.random.default_rng(0).random((2, 28, 28, 1), np.float32)
    self.assertEqual(small(x).shape, (2, 10))


if __name__ == '__main__':
  absltest.main()
