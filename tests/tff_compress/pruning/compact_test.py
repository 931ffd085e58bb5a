"""The units-pruned model without its dead units computes the same logits
with fewer parameters and FLOPs."""

from absl.testing import absltest
import numpy as np

from tff_compress.dropout import submodel
from tff_compress.models import flops
from tff_compress.models import registry as model_registry
from tff_compress.pruning import compact


def _caldas(widths=None):
  return model_registry.build_model('caldas_cnn', (28, 28, 1), 10, seed=0,
                                    widths=widths)


def _units_pruned(model, dead):
  """The model's weights (plus noise, no zeros) with the units `dead`
  ({layer: indices}) silenced: zero incoming weights and bias, as a
  units-pruned run leaves them; the next layer still reads them."""
  rng = np.random.default_rng(0)
  weights = [w.numpy() + rng.normal(0, 0.01, w.shape).astype(np.float32)
             for w in model.trainable_weights]
  index = {id(w): i for i, w in enumerate(model.trainable_weights)}
  for layer in model.layers:
    if layer.name in dead:
      weights[index[id(layer.kernel)]][..., dead[layer.name]] = 0.0
      weights[index[id(layer.bias)]][dead[layer.name]] = 0.0
  return weights


class CompactTest(absltest.TestCase):

  def test_same_logits_smaller_model(self):
    model = _caldas()
    rng = np.random.default_rng(1)
    dead = {'conv1': rng.choice(32, 16, replace=False),
            'conv2': rng.choice(64, 40, replace=False),
            'dense1': rng.choice(512, 400, replace=False)}
    weights = _units_pruned(model, dead)
    model.set_weights(weights)
    widths, small_weights = compact.compact(model, weights)
    self.assertEqual(widths, {'conv1': 16, 'conv2': 24, 'dense1': 112})
    small = _caldas(widths)
    small.set_weights(small_weights)
    x = rng.random([8, 28, 28, 1], np.float32)
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(),
                               rtol=1e-4, atol=1e-5)
    self.assertLess(flops.count_params(small), flops.count_params(model) / 3)
    self.assertLess(flops.forward_flops_per_example(small),
                    flops.forward_flops_per_example(model) / 2)

  def test_dense_model_is_unchanged(self):
    model = _caldas()
    weights = [w.numpy() for w in model.trainable_weights]
    widths, same = compact.compact(model, weights)
    self.assertEqual(widths, {'conv1': 32, 'conv2': 64, 'dense1': 512})
    for a, b in zip(same, weights):
      np.testing.assert_array_equal(a, b)

  def test_a_layer_with_no_live_unit_keeps_one(self):
    model = _caldas()
    weights = _units_pruned(model, {'conv2': np.arange(64)})
    self.assertEqual(compact.alive_units(model, weights)['conv2'].tolist(),
                     [0])

  def test_wrong_shapes_name_both(self):
    model = _caldas()
    weights = [w.numpy() for w in model.trainable_weights][:-1]
    with self.assertRaisesRegex(ValueError, 'weights have shapes'):
      compact.compact(model, weights)

  def test_unsupported_model_is_refused(self):
    model = model_registry.build_model('resnet8', (32, 32, 3), 10)
    with self.assertRaisesRegex(submodel.SubmodelError, 'non-trainable'):
      compact.compact(model, [w.numpy() for w in model.trainable_weights])


if __name__ == '__main__':
  absltest.main()
