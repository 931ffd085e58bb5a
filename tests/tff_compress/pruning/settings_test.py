"""`pruning.*`: every unsupported or inconsistent setting is a one-line
config error naming the key."""

from absl.testing import absltest
from absl.testing import parameterized

from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress.pruning import settings as pruning_settings

# A pruned smoke run whose schedule fits its 4 rounds.
_PRUNED = {'pruning.target': 0.5, 'pruning.end_round': 3,
           'pruning.frequency': 1}


def _caldas(**overrides):
  return run_utils.config_file('caldas_mnist.py', **{
      'rounds': 10, **_PRUNED, **overrides})


class SettingsTest(parameterized.TestCase):

  def test_default_is_off_and_shipped_config_is_on(self):
    self.assertFalse(run_utils.settings(run_utils.smoke_config()).pruning
                     .active)
    p = run_utils.settings(run_utils.config_file('pruning.py')).pruning
    self.assertTrue(p.active)
    self.assertEqual((p.target, p.structure), (0.5, 'unstructured'))

  def test_valid_structures_validate(self):
    for overrides in ({}, {'pruning.structure': 'units'},
                      {'pruning.structure': 'block',
                       'pruning.layers': 'dense1'},
                      {'pruning.structure': 'm_by_n', 'pruning.end_round': 1}):
      with self.subTest(overrides):
        _caldas(**overrides)

  def test_parsers(self):
    self.assertEqual(pruning_settings.parse_m_by_n(' 1 : 4 '), (1, 4))
    self.assertEqual(pruning_settings.parse_block('4x1'), (4, 1))
    for bad in ('4:2', '2:2', '0:4', '2/4', ''):
      with self.assertRaises(ValueError):
        pruning_settings.parse_m_by_n(bad)
    for bad in ('0x4', '4', '4x', 'axb'):
      with self.assertRaises(ValueError):
        pruning_settings.parse_block(bad)

  @parameterized.named_parameters(
      ('target_one', {'pruning.target': 1.0}, "'pruning.target' is 1.0"),
      ('bad_structure', {'pruning.structure': 'filters'},
       "'pruning.structure' is 'filters'; allowed: unstructured, units"),
      ('bad_m_by_n', {'pruning.m_by_n': '4:2'}, "'pruning.m_by_n' is '4:2'"),
      ('bad_block', {'pruning.block': '16'}, "'pruning.block' is '16'"),
      ('end_before_begin', {'pruning.begin_round': 3,
                            'pruning.end_round': 2},
       "'pruning.end_round' is 2; allowed: >= pruning.begin_round"),
      ('end_after_run', {'pruning.end_round': 11, 'pruning.frequency': 1},
       "'pruning.end_round' is 11; allowed: <= rounds"),
      ('frequency', {'pruning.frequency': 3},
       "'pruning.frequency' is 3; end_round - begin_round"),
      ('m_by_n_target', {'pruning.structure': 'm_by_n',
                         'pruning.end_round': 1},
       None),
      ('m_by_n_ramp', {'pruning.structure': 'm_by_n', 'pruning.target': 0.5},
       "'pruning.end_round' is 3; structure=m_by_n prunes in one step"),
      ('unknown_layer', {'pruning.layers': 'conv3'},
       "'pruning.layers' names 'conv3', not a Conv2D/Dense layer"),
      ('units_output', {'pruning.structure': 'units',
                        'pruning.layers': 'logits'},
       "'pruning.layers' names 'logits', not a hidden Conv2D/Dense"),
      ('twice', {'pruning.layers': 'conv2,conv2'}, 'names a layer twice'),
      ('block_on_conv', {'pruning.structure': 'block',
                         'pruning.layers': 'conv2'},
       'block sparsity applies to Dense kernels only'),
      ('block_shape', {'pruning.structure': 'block', 'pruning.block': '5x1',
                       'pruning.layers': 'dense1'},
       'not a whole number of 5x1 blocks'),
      ('m_by_n_channels', {'pruning.structure': 'm_by_n',
                           'pruning.target': 0.5, 'pruning.end_round': 1,
                           'pruning.layers': 'conv1'},
       'its 1 input channels are not a multiple of N = 4'),
      ('dropout', {'dropout.keep': 0.5},
       'pruning with Federated Dropout is not supported'),
      ('dpsgd', {'dp.mode': 'sample'}, "pruning with dp.mode='sample'"),
      ('workers', {'runtime.workers': 'localhost:8000'},
       'unset runtime.workers'),
  )
  def test_one_line_errors(self, overrides, message):
    if message is None:  # m_by_n_target: 2:4 is 50 %, not 75 %
      overrides = {**overrides, 'pruning.target': 0.75}
      message = ("'pruning.target' is 0.75; structure=m_by_n with "
                 "pruning.m_by_n='2:4' has sparsity 2/4 = 0.5")
    with self.assertRaises(config_lib.ConfigError) as raised:
      _caldas(**overrides)
    self.assertIn(message, str(raised.exception))
    self.assertNotIn('\n', str(raised.exception))

  def test_other_algorithms_refuse_pruning(self):
    with self.assertRaisesRegex(config_lib.ConfigError,
                                'applies to algorithm=fedavg only'):
      run_utils.config_file('fedgkt.py', **{
          'pruning.target': 0.5, 'pruning.end_round': 1})

  def test_block_fits_no_layer_of_the_model(self):
    # 784 x 64 and 64 x 10 are not whole numbers of 3x3 blocks.
    with self.assertRaisesRegex(config_lib.ConfigError,
                                "'block', which fits no layer of dense"):
      run_utils.smoke_config(**_PRUNED, **{'pruning.structure': 'block',
                                            'pruning.block': '3x3'})


if __name__ == '__main__':
  absltest.main()
