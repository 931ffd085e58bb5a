"""Every shipped config file loads and validates: a user never meets a
config error in a file we ship."""

import os

# Keras 2.14 must be imported before absl parses flags (see tff_compress/cli.py).
import tensorflow  # pylint: disable=unused-import
from absl.testing import absltest

from tests.tff_compress import process_utils
from tff_compress import config_lib
from tff_compress import tradeoff_lib

_CONFIGS = os.path.join(process_utils.WORKSPACE, 'configs')


def _config_files():
  # Bazel's runfiles tree adds an empty __init__.py to every Python folder.
  files = sorted(f for f in os.listdir(_CONFIGS)
                 if f.endswith('.py') and not f.startswith('_'))
  assert len(files) >= 10, files  # the test must see the shipped configs
  return files


# Hashes of shipped configs as runs recorded them before the sections and
# keys added since (tiers, personalization, pruning, codec quantizer/scale,
# ...) existed: their run directories must still resume.
_RECORDED_HASHES = {'smoke.py': '3a1e1590ba', 'caldas_mnist.py': '2e6baeb00b',
                    'dp_fedavg.py': '0956b6e526'}


class ConfigsTest(absltest.TestCase):

  def test_every_config_file_validates(self):
    sweeps = 0
    for name in _config_files():
      with self.subTest(name):
        cfg = config_lib.load_config_file(os.path.join(_CONFIGS, name))
        if 'grids' in cfg:  # a trade-off sweep: validates every cell
          sweeps += 1
          base = config_lib.load_config_file(
              os.path.join(process_utils.WORKSPACE, cfg.base))
          cells = tradeoff_lib.expand(cfg, base)
          self.assertGreater(len(cells), len(cfg.seeds))
        else:
          config_lib.validate(cfg)
          self.assertEqual(cfg.name, name[:-len('.py')])
    self.assertGreaterEqual(sweeps, 5)

  def test_default_sweep_crosses_dp_compression_and_dropout(self):
    sweep = config_lib.load_config_file(os.path.join(_CONFIGS, 'tradeoff.py'))
    base = config_lib.load_config_file(
        os.path.join(process_utils.WORKSPACE, sweep.base))
    cells = tradeoff_lib.expand(sweep, base)
    keys = {k for cell in cells for k, _ in cell.overrides}
    for key in ('dp.noise_multiplier', 'uplink.bits', 'broadcast.bits',
                'dropout.keep'):
      self.assertIn(key, keys)
    # DP combined with a codec and with dropout in one cell.
    self.assertTrue(any(
        {'dp.noise_multiplier', 'uplink.bits', 'dropout.keep'} <=
        {k for k, _ in cell.overrides} for cell in cells))
    # The baseline is non-private and uncompressed.
    self.assertEqual(base.dp.mode, 'none')
    self.assertEqual((base.uplink.bits, base.broadcast.bits), (32, 32))

  def test_file_without_get_config_is_a_config_error(self):
    path = self.create_tempfile('cfg.py', content='x = 1\n').full_path
    with self.assertRaisesRegex(config_lib.ConfigError, 'no get_config'):
      config_lib.load_config_file(path)
    with self.assertRaisesRegex(config_lib.ConfigError, 'not found'):
      config_lib.load_config_file(path + '.missing')

  def test_dp_fedavg_is_many_clients_with_dp(self):
    many = config_lib.load_config_file(
        os.path.join(_CONFIGS, 'many_clients.py'))
    dp = config_lib.load_config_file(os.path.join(_CONFIGS, 'dp_fedavg.py'))
    diff = {k for k, v in config_lib.flatten(dp).items()
            if config_lib.flatten(many)[k] != v}
    self.assertEqual(diff, {'name', 'dp.mode'})


  def test_keys_added_later_leave_recorded_runs_resumable(self):
    for name, recorded in _RECORDED_HASHES.items():
      cfg = config_lib.validate(
          config_lib.load_config_file(os.path.join(_CONFIGS, name)))
      self.assertEqual(config_lib.config_hash(cfg), recorded, name)
      # Setting an added key away from its default is a different run.
      cfg.uplink.quantizer = 'eden'
      self.assertNotEqual(config_lib.config_hash(cfg), recorded, name)


if __name__ == '__main__':
  absltest.main()
