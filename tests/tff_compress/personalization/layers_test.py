"""Layer specs: 'head' and layer names -> trainable-variable positions."""

from absl.testing import absltest

from tff_compress.models import registry as model_registry
from tff_compress.personalization import layers


def _cnn():
  return model_registry.build_model('caldas_cnn', (28, 28, 1), 10)


class LayersTest(absltest.TestCase):

  def test_head_is_the_last_layer_with_weights(self):
    model = _cnn()
    self.assertEqual(layers.parse('head', model), ['logits'])
    # logits kernel and bias: the last two trainable variables.
    self.assertEqual(layers.resolve('head', model), (6, 7))
    self.assertEqual(
        [tuple(model.trainable_weights[i].shape)
         for i in layers.resolve('head', model)], [(512, 10), (10,)])

  def test_names_resolve_in_model_order(self):
    model = _cnn()
    self.assertEqual(layers.parse('logits, conv1', model),
                     ['conv1', 'logits'])
    self.assertEqual(layers.resolve('logits,conv1', model), (0, 1, 6, 7))
    self.assertEqual(layers.resolve('head,logits', model), (6, 7))
    self.assertEqual(layers.trainable_layer_names(model),
                     ['conv1', 'conv2', 'dense1', 'logits'])

  def test_bad_specs_name_the_problem(self):
    model = _cnn()
    with self.assertRaisesRegex(layers.LayerSpecError, 'names no layer'):
      layers.parse(' , ', model)
    with self.assertRaisesRegex(layers.LayerSpecError,
                                r"'dense9'.*conv1, conv2, dense1, logits"):
      layers.parse('dense9', model)
    with self.assertRaisesRegex(layers.LayerSpecError,
                                "'pool1', which has no trainable weights"):
      layers.parse('pool1', model)


if __name__ == '__main__':
  absltest.main()
