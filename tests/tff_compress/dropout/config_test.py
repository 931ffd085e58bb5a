"""`dropout.*` config keys: validation names the key and the allowed values."""

# Keras 2.14 must be imported before absl parses flags (see tff_compress/cli.py).
import tensorflow  # pylint: disable=unused-import
from absl.testing import absltest
from absl.testing import parameterized

from tests.tff_compress import run_utils
from tff_compress import config_lib


def _cfg(**dropout):
  return run_utils.default_config(
      validate=False, **{f'dropout.{k}': v for k, v in dropout.items()})


class DropoutConfigTest(parameterized.TestCase):

  @parameterized.parameters(
      (dict(keep=0.0), "'dropout.keep' is 0.0; allowed: (0.0, 1.0]"),
      (dict(keep=-0.5), "'dropout.keep'"),
      (dict(keep=1.01), "'dropout.keep'"),
      (dict(mask='per_batch'), 'per_client, per_round'),
      (dict(keep=0.5, per_layer='conv3=0.5'), 'conv1, conv2, dense1'),
      (dict(per_layer='logits=0.5'), "cannot drop"),
      (dict(per_layer='dense1=0'), "dense1=0.0; allowed: (0, 1]"),
      (dict(per_layer='dense1:0.5'), 'LAYER=FRACTION'),
  )
  def test_rejected(self, dropout, message):
    with self.assertRaises(config_lib.ConfigError) as e:
      config_lib.validate(_cfg(**dropout))
    self.assertIn(message, str(e.exception))
    self.assertIn('dropout.', str(e.exception))

  def test_accepted(self):
    config_lib.validate(_cfg(keep=0.75, per_layer='conv2=0.5, dense1=1'))
    config_lib.validate(_cfg(keep=1.0, mask='per_round'))

  def test_layer_names_follow_the_model(self):
    cfg = _cfg(keep=0.5, per_layer='dense1=0.25')
    cfg.model.name = 'dense'
    config_lib.validate(cfg)
    cfg.dropout.per_layer = 'conv1=0.5'
    with self.assertRaisesRegex(config_lib.ConfigError, 'droppable layers: '
                                'dense1$'):
      config_lib.validate(cfg)


if __name__ == '__main__':
  absltest.main()
