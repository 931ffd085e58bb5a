"""Submodel plans: shapes, masks, gather/scatter and forward equivalence."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_compress.dropout import submodel
from tff_compress.models import flops
from tff_compress.models import registry as model_registry

SHAPE = (28, 28, 1)


def _model(name, widths=None, **kw):
  return model_registry.build_model(name, SHAPE, 10, seed=3,
                                    widths=widths or {}, **kw)


def _seed(round_num=4, key=0, base=7):
  return submodel.mask_seed(base, tf.constant(round_num, tf.int64),
                            tf.constant(key, tf.int32))


class PlanTest(parameterized.TestCase):

  def test_caldas_widths_and_flops(self):
    model = _model('caldas_cnn')
    plan = submodel.build_plan(model, submodel.keep_fractions(model, 0.75, {}))
    self.assertEqual(plan.widths, {'conv1': 24, 'conv2': 48, 'dense1': 384})
    self.assertEqual(plan.scales,
                     {'conv1': 32 / 24, 'conv2': 64 / 48, 'dense1': 512 / 384})
    sub = _model('caldas_cnn', plan.widths)
    self.assertEqual([tuple(w.shape) for w in sub.trainable_weights],
                     plan.sub_shapes())
    ratio = (flops.training_flops_per_example(model) /
             flops.training_flops_per_example(sub))
    # conv2 and dense1 scale with p^2 (both sides dropped): ~1.76x.
    self.assertBetween(ratio, 1.7, 1.8)

  def test_per_layer_overrides_and_rounding(self):
    model = _model('dense', hidden=(10, 7))
    fractions = submodel.keep_fractions(
        model, 0.5, submodel.parse_per_layer('dense2 = 0.01'))
    self.assertEqual(fractions, {'dense1': 0.5, 'dense2': 0.01})
    plan = submodel.build_plan(model, fractions)
    self.assertEqual(plan.widths, {'dense1': 5, 'dense2': 1})  # at least 1

  @parameterized.parameters(
      ('conv9=0.5', 'conv9'), ('logits=0.5', 'logits'),
      ('dense1=1.5', r'\(0, 1\]'), ('dense1', 'LAYER=FRACTION'),
      ('dense1=x', 'LAYER=FRACTION'))
  def test_bad_per_layer(self, text, message):
    model = _model('dense')
    with self.assertRaisesRegex(submodel.SubmodelError,
                                f"dropout.per_layer.*{message}"):
      submodel.keep_fractions(model, 0.5, submodel.parse_per_layer(text))


class MaskTest(absltest.TestCase):

  def test_reproducible_sorted_and_sized(self):
    plan = submodel.build_plan(_model('caldas_cnn'),
                               {'conv1': 0.5, 'conv2': 0.75, 'dense1': 0.25})
    a = plan.kept_indices(_seed())
    b = plan.kept_indices(_seed())
    for layer, n, k in zip(plan.layers, plan.units, plan.kept):
      ids = a[layer].numpy()
      np.testing.assert_array_equal(ids, b[layer].numpy())
      self.assertLen(ids, k)
      self.assertTrue(np.all(np.diff(ids) > 0))
      self.assertTrue(0 <= ids.min() and ids.max() < n)

  def test_masks_depend_on_round_key_and_seed(self):
    plan = submodel.build_plan(_model('dense', hidden=(64,)), {'dense1': 0.5})
    base = plan.kept_indices(_seed())['dense1'].numpy()
    for other in (_seed(round_num=5), _seed(key=1), _seed(base=8)):
      self.assertFalse(np.array_equal(
          base, plan.kept_indices(other)['dense1'].numpy()))

  def test_masks_are_uniform(self):
    # Every unit is kept with probability k/n over many masks.
    plan = submodel.build_plan(_model('dense', hidden=(20,)), {'dense1': 0.25})
    counts = np.zeros(20)
    for key in range(2000):
      counts[plan.kept_indices(_seed(key=key))['dense1'].numpy()] += 1
    # Binomial(2000, 0.25): sd ~19.4; 5 sd.
    np.testing.assert_allclose(counts, 500, atol=97)


class GatherScatterTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_forward_equals_full_model_with_dropped_units_zeroed(self, rescale):
    """Submodel logits == full-model logits with dropped units silenced.

    Silencing a unit = zeroing its incoming kernel slice and bias, so its
    ReLU output is 0; its outgoing weights stay untouched. With `rescale`
    the submodel multiplies a dropped layer's activations by n/k, which for
    the full model equals multiplying the next layer's kernel by n/k
    (positive scales commute with ReLU and max-pooling).
    """
    full = _model('caldas_cnn')
    plan = submodel.build_plan(full, {'conv1': 0.5, 'conv2': 0.75,
                                      'dense1': 0.6})
    kept = plan.kept_indices(_seed(key=3))
    scales = plan.scales if rescale else {}
    sub = model_registry.build_model('caldas_cnn', SHAPE, 10, seed=3,
                                     widths=plan.widths, scales=scales)
    self.assertLen(sub.layers, len(full.layers) + len(scales))
    sub.set_weights([w.numpy() for w in plan.gather(
        [tf.convert_to_tensor(w) for w in full.trainable_weights], kept)])

    silenced, previous = [], None
    for layer in full.layers:
      weights = layer.get_weights()
      if weights and previous in scales:
        weights[0] = weights[0] * scales[previous]
      if layer.name in plan.layers:
        drop = np.setdiff1d(np.arange(weights[1].shape[0]),
                            kept[layer.name].numpy())
        weights[0][..., drop] = 0.0
        weights[1][drop] = 0.0
      if weights:
        previous = layer.name
      silenced.append(weights)
    for layer, weights in zip(full.layers, silenced):
      layer.set_weights(weights)

    x = np.random.default_rng(0).random((5,) + SHAPE, dtype=np.float32)
    np.testing.assert_allclose(sub(x).numpy(), full(x).numpy(),
                               rtol=1e-5, atol=1e-5)

  def test_scatter_inverts_gather(self):
    full = _model('caldas_cnn')
    plan = submodel.build_plan(full, {'conv1': 0.5, 'conv2': 0.5,
                                      'dense1': 0.5})
    kept = plan.kept_indices(_seed())
    weights = [tf.convert_to_tensor(w) for w in full.trainable_weights]
    sub = plan.gather(weights, kept)
    np.testing.assert_equal(
        [s.numpy() for s in plan.gather(plan.scatter(sub, kept), kept)],
        [s.numpy() for s in sub])
    # scatter(gather(w)) == w * coverage, exactly.
    back = plan.scatter(sub, kept)
    for w, b, c in zip(weights, back, plan.coverage(kept)):
      np.testing.assert_array_equal(b.numpy(), w.numpy() * c.numpy())
    # Coverage of a dense kernel is the outer product of row/column masks.
    cover = plan.coverage(kept)
    self.assertEqual(cover[4].numpy().sum(),  # dense1 kernel
                     plan.kept[1] * 49 * plan.kept[2])

  def test_identity_plan(self):
    full = _model('dense')
    plan = submodel.build_plan(full, {})
    self.assertTrue(plan.is_identity)
    kept = plan.kept_indices(_seed())
    weights = [tf.convert_to_tensor(w) for w in full.trainable_weights]
    np.testing.assert_equal([w.numpy() for w in plan.gather(weights, kept)],
                            [w.numpy() for w in weights])


if __name__ == '__main__':
  absltest.main()
