"""`tiers.*`: the mix parses, and what does not compose is a one-line error."""

# Keras 2.14 must be imported before absl parses flags (see tff_compress/cli.py).
import tensorflow  # pylint: disable=unused-import
from absl.testing import absltest
from absl.testing import parameterized

from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress.tiers import settings as tier_settings

MIX = 'high:1:1.0, mid:1:0.5, low:1:0.25'


def _cfg(**overrides):
  return run_utils.default_config(validate=False, **overrides)


class ParseMixTest(absltest.TestCase):

  def test_shares_are_normalized_and_order_kept(self):
    tiers = tier_settings.parse_mix('big:2:1.0, small:1/2:0.5:dense1=1/4')
    self.assertEqual([t.name for t in tiers], ['big', 'small'])
    self.assertAlmostEqual(tiers[0].share, 0.8)
    self.assertAlmostEqual(tiers[1].share, 0.2)
    self.assertEqual(tiers[1].width, 0.5)
    self.assertEqual(tiers[1].fraction('dense1'), 0.25)
    self.assertEqual(tiers[1].fraction('conv1'), 0.5)

  def test_several_layer_overrides(self):
    (tier,) = tier_settings.parse_mix('t:1:0.5:conv1=0.75; dense1=0.125')
    self.assertEqual(dict(tier.per_layer), {'conv1': 0.75, 'dense1': 0.125})

  def test_empty_mix_has_no_tiers(self):
    self.assertEqual(tier_settings.parse_mix(' '), ())
    self.assertFalse(tier_settings.TierSettings().active)

  def test_units_kept_is_the_ceiling_without_float_noise(self):
    self.assertEqual(tier_settings.units_kept(0.25, 32), 8)
    self.assertEqual(tier_settings.units_kept(0.3, 32), 10)  # 9.6 -> 10
    self.assertEqual(tier_settings.units_kept(0.1, 30), 3)  # not 4
    self.assertEqual(tier_settings.units_kept(0.01, 10), 1)


class TierConfigTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('not_three_parts', {'tiers.mix': 'high:1'}, 'NAME:SHARE:WIDTH'),
      ('bad_name', {'tiers.mix': 'High:1:1.0'}, 'lower-case'),
      ('bad_share', {'tiers.mix': 'a:x:1.0'}, "share 'x'"),
      ('zero_share', {'tiers.mix': 'a:0:1.0'}, 'must be > 0'),
      ('wide', {'tiers.mix': 'a:1:1.5'}, "width '1.5'; allowed: (0, 1]"),
      ('zero_width', {'tiers.mix': 'a:1:0'}, 'allowed: (0, 1]'),
      ('bad_override', {'tiers.mix': 'a:1:0.5:dense1'}, 'LAYER=P'),
      ('override_range', {'tiers.mix': 'a:1:0.5:dense1=2'}, 'dense1=2'),
      ('repeated', {'tiers.mix': 'a:1:1.0,a:1:0.5'}, 'repeat: a'),
      ('unknown_layer', {'tiers.mix': 'a:1:0.5:conv9=0.5'},
       'hidden layers: conv1, conv2, dense1'),
      ('output_layer', {'tiers.mix': 'a:1:0.5:logits=0.5'}, 'cannot slice'),
      ('with_dropout', {'tiers.mix': MIX, 'dropout.keep': 0.5},
       'dropout.keep/dropout.per_layer are both set'),
      ('adaptive_dp', {'tiers.mix': MIX, 'dp.mode': 'user',
                       'dp.adaptive': True, 'dp.noise_multiplier': 0.0},
       "'dp.adaptive' is True"),
      ('fedgkt', {'tiers.mix': MIX, 'algorithm': 'fedgkt',
                  'model.name': 'resnet56'}, 'algorithm=fedavg only'),
      ('batch_norm', {'tiers.mix': MIX, 'model.name': 'resnet20'},
       'non-trainable weights'),
      ('empty_tier', {'tiers.mix': 'a:100:1.0,b:1:0.5',
                      'data.num_clients': 20}, 'leaves tier b without'),
      ('train_only_unknown', {'tiers.mix': MIX, 'tiers.train_only': 'top'},
       "allowed: one of high, mid, low"),
      ('train_only_without_mix', {'tiers.train_only': 'low'},
       'needs tiers.mix'),
      ('train_only_with_drops', {'tiers.mix': MIX, 'tiers.train_only': 'low',
                                 'faults.drop_prob': 0.1},
       "'tiers.train_only' is 'low'"),
      ('slicing', {'tiers.mix': MIX, 'tiers.slicing': 'ordered'},
       'nested, random, random_per_round'),
  )
  def test_rejected_with_one_line_naming_the_key(self, overrides, message):
    with self.assertRaises(config_lib.ConfigError) as e:
      config_lib.validate(_cfg(**overrides))
    text = str(e.exception)
    self.assertIn(message, text)
    self.assertNotIn('\n', text)
    self.assertRegex(text, r"config key '(tiers|dp)\.")

  @parameterized.named_parameters(
      ('nested', {'tiers.mix': MIX}),
      ('random_codecs', {'tiers.mix': MIX, 'tiers.slicing': 'random',
                         'uplink.transform': 'hadamard', 'uplink.bits': 1}),
      ('dp_fixed_secagg', {'tiers.mix': MIX, 'dp.mode': 'user',
                           'secagg.enabled': True}),
      ('faults', {'tiers.mix': MIX, 'faults.drop_prob': 0.2,
                  'faults.nan_prob': 0.1}),
      ('workers', {'tiers.mix': MIX, 'runtime.workers': 'localhost:1'}),
      ('train_only', {'tiers.mix': MIX, 'tiers.train_only': 'low'}),
      ('dense_overrides', {'tiers.mix': 'a:1:1.0,b:1:0.5:dense1=0.25',
                           'model.name': 'dense'}),
  )
  def test_accepted(self, overrides):
    config_lib.validate(_cfg(**overrides))

  def test_default_tiers_leave_the_run_identity_unchanged(self):
    """A run without tiers keeps the hash and config.json it had before
    the section existed."""
    cfg = run_utils.default_config()
    self.assertNotIn('tiers', config_lib.identity(cfg))
    tiered = run_utils.default_config(**{'tiers.mix': MIX})
    self.assertEqual(config_lib.identity(tiered)['tiers']['mix'], MIX)
    self.assertNotEqual(config_lib.config_hash(cfg),
                        config_lib.config_hash(tiered))


if __name__ == '__main__':
  absltest.main()
