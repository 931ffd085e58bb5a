"""Behaviour is pinned: runs of representative configs equal recorded ones.

Each case runs a shipped config (few rounds) through `simulate_lib.run`
and compares every `metrics.csv` value (except wall-clock seconds), the
summary's figures and a digest of the final weights with
`golden/metrics.json`, recorded before the architecture refactor (issue 15).
The runs are deterministic (seeded sampling, shuffles, masks and codec
noise; DP cases use noise multiplier 0, since DP noise is unseeded by
design), so the comparison is exact: a refactor must not change one bit.

To re-record after an intended behaviour change (say so in the commit):
  REGRESSION_RECORD=1 .venv/bin/python -m tests.tff_compress.regression_test
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tests.tff_compress import process_utils
from tests.tff_compress import run_utils
from tff_compress import simulate_lib

_GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden',
                       'metrics.json')
_CONFIGS = os.path.join(process_utils.WORKSPACE, 'configs')

# name -> (config file, overrides)
CASES = {
    'smoke': ('smoke.py', {}),
    'caldas_cnn': ('caldas_mnist.py', {'rounds': 2, 'eval_every': 1}),
    'dropout_codecs': ('caldas_mnist.py', {
        'rounds': 2, 'eval_every': 2, 'dropout.keep': 0.75,
        'dropout.per_layer': 'dense1=0.5', 'broadcast.bits': 4,
        'uplink.transform': 'hadamard', 'uplink.bits': 1}),
    'codecs_kashin_subsample': ('smoke.py', {
        'broadcast.transform': 'kashin', 'broadcast.bits': 8,
        'uplink.transform': 'kashin', 'uplink.bits': 2,
        'uplink.subsample': 0.5, 'broadcast.min_size': 100,
        'uplink.min_size': 100}),
    'dp_fedavg_codec': ('dp_fedavg.py', {
        'rounds': 2, 'eval_every': 2, 'dp.noise_multiplier': 0.0,
        'uplink.transform': 'hadamard', 'uplink.bits': 2}),
    'dp_adaptive': ('smoke.py', {
        'dp.mode': 'user', 'dp.adaptive': True, 'dp.noise_multiplier': 0.0,
        'dp.clip': 0.1}),
    'dropout_dp': ('smoke.py', {
        'dropout.keep': 0.5, 'dropout.mask': 'per_round', 'dp.mode': 'user',
        'dp.noise_multiplier': 0.0, 'dp.clip': 0.2,
        'uplink.transform': 'hadamard', 'uplink.bits': 4,
        'uplink.min_size': 100}),
    'dropout_float_uplink': ('smoke.py', {
        'dropout.keep': 0.5, 'broadcast.transform': 'hadamard',
        'broadcast.bits': 8, 'broadcast.min_size': 100}),
    'dropout_dp_float_uplink': ('smoke.py', {
        'dropout.keep': 0.75, 'dropout.mask': 'per_round',
        'dp.mode': 'user', 'dp.noise_multiplier': 0.0, 'dp.clip': 0.2}),
    'dpsgd': ('smoke.py', {'dp.mode': 'sample', 'dp.noise_multiplier': 0.0,
                           'dp.microbatches': 4}),
    'secagg': ('smoke.py', {'secagg.enabled': True}),
    'faults': ('smoke.py', {
        'clients_per_round': 6, 'faults.drop_prob': 0.2,
        'faults.nan_prob': 0.2, 'faults.huge_prob': 0.1,
        'faults.over_select': 0.5, 'faults.deadline': 14.0,
        'faults.min_reports': 2}),
    'fedgkt': ('fedgkt.py', {'rounds': 1, 'eval_every': 1,
                             'gkt.server_epochs': 1, 'gkt.bits': 8}),
    'fedavg_bn': ('fedgkt.py', {'algorithm': 'fedavg_bn', 'rounds': 1,
                                'eval_every': 1}),
}

_VOLATILE = ('round_seconds', 'total_round_seconds', 'mean_round_seconds')


def _digest(arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def observe(name: str) -> dict:
  """Runs case `name` and returns what is pinned of it."""
  path, overrides = CASES[name]
  config = run_utils.config_file(os.path.join(_CONFIGS, path), **overrides)
  with tempfile.TemporaryDirectory() as run_dir:
    summary = simulate_lib.run(config, run_dir, out=io.StringIO())
    rows = [{k: v for k, v in r.items() if k not in _VOLATILE}
            for r in run_utils.metrics_rows(run_dir)]
    weights = _digest(run_utils.final_weights(run_dir))
  summary = {k: v for k, v in summary.items() if k not in _VOLATILE}
  return json.loads(json.dumps(
      {'rows': rows, 'summary': summary, 'final_weights_sha256': weights},
      default=float))


class RegressionTest(parameterized.TestCase):

  @parameterized.named_parameters((n, n) for n in sorted(CASES))
  def test_same_as_recorded(self, name):
    with open(_GOLDEN) as f:
      golden = json.load(f)[name]
    got = observe(name)
    self.assertEqual(got['rows'], golden['rows'])
    self.assertEqual(got['summary'], golden['summary'])
    self.assertEqual(got['final_weights_sha256'],
                     golden['final_weights_sha256'])


def _record() -> None:
  recorded = {}
  if os.path.exists(_GOLDEN):
    with open(_GOLDEN) as f:
      recorded = json.load(f)
  only = [n for n in os.environ.get('REGRESSION_CASES', '').split(',') if n]
  for name in sorted(CASES):
    if only and name not in only:
      continue
    print(f'recording {name} ...', flush=True)
    recorded[name] = observe(name)
  with open(_GOLDEN, 'w') as f:
    json.dump(recorded, f, indent=1, sort_keys=True)
    f.write('\n')


if __name__ == '__main__':
  if os.environ.get('REGRESSION_RECORD'):
    _record()
  else:
    absltest.main()
