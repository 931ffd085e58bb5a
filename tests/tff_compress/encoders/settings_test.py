"""`broadcast.*` / `uplink.*` config keys and the chains they select."""

# Keras 2.14 must be imported before absl parses flags (see tff_compress/cli.py).
import tensorflow  # pylint: disable=unused-import
from absl.testing import absltest
from absl.testing import parameterized

from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress.encoders import eden
from tff_compress.encoders import factory
from tff_compress.encoders import lloyd_max
from tff_compress.encoders import rotation
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import stages


def _cfg(section, **keys):
  return run_utils.default_config(
      validate=False, **{f'{section}.{k}': v for k, v in keys.items()})


class CodecConfigTest(parameterized.TestCase):

  @parameterized.parameters(
      ('uplink', dict(quantizer='lloyd'),
       "'uplink.quantizer' is 'lloyd'; allowed: uniform, eden"),
      ('broadcast', dict(scale='min'),
       "'broadcast.scale' is 'min'; allowed: auto, unbiased, mse"),
      ('uplink', dict(transform='whole'),
       "'uplink.transform' is 'whole'; allowed: none, hadamard, kashin, "
       'rotation'),
      ('uplink', dict(bits=9), "'uplink.bits' is 9; allowed: 1, 2"),
      ('broadcast', dict(quantizer='eden', bits=16),
       "'broadcast.bits' is 16; allowed with quantizer='eden': 1..8"),
      ('uplink', dict(scale='mse', bits=2),
       "'uplink.scale' is 'mse'; allowed with quantizer='uniform'"),
  )
  def test_rejected(self, section, keys, message):
    with self.assertRaises(config_lib.ConfigError) as e:
      config_lib.validate(_cfg(section, **keys))
    self.assertIn(message, str(e.exception))
    self.assertEqual(len(str(e.exception).splitlines()), 1)

  def test_accepted(self):
    for section in ('broadcast', 'uplink'):
      for keys in (dict(quantizer='eden', transform='rotation', bits=2),
                   dict(quantizer='eden', transform='rotation', bits=1,
                        subsample=0.25, scale='unbiased'),
                   dict(quantizer='eden', transform='hadamard', bits=4,
                        scale='mse'),
                   dict(transform='rotation', bits=16)):
        config_lib.validate(_cfg(section, **keys))

  def test_eden_max_bits_follows_the_tables(self):
    self.assertEqual(codec_settings.EDEN_MAX_BITS, lloyd_max.MAX_BITS)

  @parameterized.parameters(
      (codec_settings.BroadcastCodec, 'eden', 'auto', 'mse'),
      (codec_settings.UplinkCodec, 'eden', 'auto', 'unbiased'),
      (codec_settings.BroadcastCodec, 'uniform', 'auto', 'unbiased'),
      (codec_settings.BroadcastCodec, 'eden', 'unbiased', 'unbiased'),
      (codec_settings.UplinkCodec, 'eden', 'mse', 'mse'))
  def test_auto_scale_per_direction(self, cls, quantizer, scale, want):
    codec = cls(transform='rotation', bits=2, quantizer=quantizer,
                scale=scale)
    self.assertEqual(codec.resolved_scale, want)

  def test_chain_for_selects_the_stages(self):
    down = factory.chain_for(codec_settings.BroadcastCodec(
        transform='rotation', bits=2, subsample=0.5, quantizer='eden'))
    rot, quant, pack = down.stages
    self.assertIsInstance(rot, rotation.RotationStage)
    self.assertEqual((rot.keep, rot.unbiased), (0.5, False))
    self.assertIsInstance(quant, eden.EdenStage)
    self.assertEqual((quant.bits, quant.scale), (2, 'mse'))
    self.assertIsInstance(pack, stages.BitpackStage)
    self.assertFalse(down.unbiased)

    up = factory.chain_for(codec_settings.UplinkCodec(
        transform='rotation', bits=2, quantizer='eden'))
    self.assertEqual(up.stages[1].scale, 'unbiased')
    self.assertTrue(up.unbiased)

    caldas = factory.chain_for(codec_settings.UplinkCodec(
        transform='hadamard', bits=2, subsample=0.5))
    self.assertEqual([type(s) for s in caldas.stages],
                     [stages.HadamardStage, stages.SubsampleStage,
                      stages.QuantizeStage, stages.BitpackStage])


if __name__ == '__main__':
  absltest.main()
