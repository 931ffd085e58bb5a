"""FedGKT config keys: rules, one-line errors, the CIFAR-10 config."""

import os
import subprocess

from absl.testing import absltest

from tests.tff_compress import process_utils
from tests.tff_compress import run_utils
from tff_compress import config_lib

_CONFIGS = os.path.join(process_utils.WORKSPACE, 'configs')


def _fedgkt(**overrides):
  return run_utils.config_file(os.path.join(_CONFIGS, 'fedgkt.py'),
                               validate=False, **overrides)


class ConfigTest(absltest.TestCase):

  def test_configs_validate(self):
    for name in ('fedgkt.py', 'fedgkt_cifar10.py'):
      cfg = config_lib.validate(
          config_lib.load_config_file(os.path.join(_CONFIGS, name)))
      self.assertEqual(cfg.algorithm, 'fedgkt')
    # The FedAvg baseline is the same config with another algorithm.
    config_lib.validate(_fedgkt(algorithm='fedavg_bn'))
    self.assertEqual(config_lib.default_config().algorithm, 'fedavg')

  def test_errors_name_the_key_and_the_allowed_values(self):
    cases = {
        'algorithm=fedprox': (
            ('algorithm', 'fedprox'),
            "'algorithm' is 'fedprox'; allowed: fedavg, fedavg_bn, fedgkt"),
        'bits': (('gkt.bits', 12),
                 "'gkt.bits' is 12; allowed: 1, 2, 3, 4, 5, 6, 7, 8, 16, 32"),
        'quantizer': (('gkt.quantizer', 'kashin'),
                      "'gkt.quantizer' is 'kashin'; allowed: uniform, eden"),
        'eden bits': (('gkt.quantizer', 'eden', 'gkt.bits', 16),
                      "'gkt.bits' is 16; with gkt.quantizer='eden' use "
                      r'1..8 or 32'),
        'temperature': (('gkt.temperature', 0.0),
                        r"'gkt.temperature' is 0.0; allowed: \(0.0, inf\]"),
        'alpha': (('gkt.alpha', -1.0), "'gkt.alpha' is -1.0"),
        'server_epochs': (('gkt.server_epochs', 0), "'gkt.server_epochs'"),
        'edge': (('gkt.edge_model', 'resnet18'),
                 "'gkt.edge_model' is 'resnet18'; allowed: resnet5, resnet8"),
        'optimizer': (('gkt.server_optimizer', 'rmsprop'),
                      'allowed: adam, sgd, sgdm'),
        'model': (('model.name', 'caldas_cnn'),
                  "'model.name' is 'caldas_cnn'; algorithm=fedgkt splits one "
                  'of: resnet110, resnet20, resnet56'),
        'uplink codec': (('uplink.bits', 4),
                         "'uplink.bits' is 4; it applies to algorithm=fedavg "
                         'only .*gkt.bits'),
        'dp': (('dp.mode', 'user'), "'dp.mode' is 'user'; it applies to "
               'algorithm=fedavg only'),
    }
    for name, (items, message) in cases.items():
      overrides = dict(zip(items[::2], items[1::2]))
      with self.assertRaisesRegex(config_lib.ConfigError, message, msg=name):
        config_lib.validate(_fedgkt(**overrides))

  def test_missing_cifar_cache_is_a_one_line_error(self):
    missing = self.create_tempdir().full_path
    child = process_utils.popen_python(
        ['-m', 'tff_compress.simulate',
         f'--config={os.path.join(_CONFIGS, "fedgkt_cifar10.py")}',
         f'--config.data.cache_dir={missing}',
         f'--run_dir={self.create_tempdir().full_path}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = child.communicate(timeout=300)
    lines = err.decode().strip().splitlines()
    self.assertEqual(child.returncode, 2, err.decode()[-2000:])
    self.assertLen(lines, 1)
    self.assertIn(missing, lines[0])
    self.assertIn('cifar-10-batches-py', lines[0])


if __name__ == '__main__':
  absltest.main()
