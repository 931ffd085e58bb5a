"""A whole device round from the shell: `device_round broadcast`, three
TF-free `device_client` processes, `device_round aggregate`, and round 1
from the saved state; a bad update is rejected, operator mistakes are one
line and exit status 2."""

import io
import json
import os
import shutil
import subprocess
import tempfile

from absl.testing import absltest
import numpy as np

from mobile_export import device_round_lib
from mobile_export import export_lib
from tests.mobile_export import device_testing
from tests.tff_compress import process_utils
from tests.tff_compress import run_utils
from tff_compress import simulate_lib
from tff_compress.runtime import local as local_runtime

_K = 3


def _device_round(*args):
  return process_utils.popen_python(
      ['-m', 'mobile_export.device_round', *args], stdout=subprocess.PIPE,
      stderr=subprocess.PIPE)


def _ok(child, what):
  out, err = child.communicate(timeout=600)
  if child.returncode != 0:
    raise AssertionError(f'{what} failed:\n{err.decode()[-3000:]}')
  return out.decode()


class DeviceRoundCliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.run_dir = os.path.join(cls.tmp, 'run')
    cfg = run_utils.smoke_config(rounds=1, clients_per_round=_K)
    simulate_lib.run(cfg, cls.run_dir, out=io.StringIO())
    export_lib.export(cls.run_dir, out=open(os.devnull, 'w'))
    cls.round_dirs = []
    for r in range(2):
      d = os.path.join(cls.tmp, f'r{r}')
      cls.round_dirs.append(d)
      cls.broadcast_out = _ok(_device_round(
          f'--run_dir={cls.run_dir}', 'broadcast', f'--round={r}',
          f'--out_dir={d}', '--client_data'), f'broadcast {r}')
      procs = [device_testing.popen_device([
          '-m', 'mobile_export.device_client',
          f'--model_dir={os.path.join(cls.run_dir, "tflite")}',
          f'--broadcast={device_round_lib.broadcast_path(d, k)}',
          f'--data={device_round_lib.client_data_path(d, k)}',
          f'--out={device_round_lib.update_path(d, k)}'])
               for k in range(_K)]
      for k, p in enumerate(procs):
        _, stderr = p.communicate(timeout=600)
        if p.returncode:
          raise AssertionError(f'device {k} failed:\n{stderr[-3000:]}')
      if r == 1:  # a corrupted update from slot 2
        path = device_round_lib.update_path(d, 2)
        with open(path, 'r+b') as f:
          f.seek(30)
          f.write(b'\xff\xff')
      cls.aggregate_out = _ok(_device_round(
          f'--run_dir={cls.run_dir}', 'aggregate', f'--round={r}',
          f'--updates_dir={d}'), f'aggregate {r}')

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_rounds_are_recorded(self):
    rows = run_utils.metrics_rows(
        os.path.join(self.run_dir, device_round_lib.SUBDIR))
    self.assertEqual([r['round'] for r in rows], ['0', '1'])
    self.assertEqual([int(r['clients_reported']) for r in rows], [_K, _K - 1])
    self.assertEqual([int(r['rejected']) for r in rows], [0, 1])
    for r in rows:
      self.assertBetween(float(r['eval_accuracy']), 0.0, 1.0)
      self.assertGreater(int(r['bytes_up']), 0)
    with open(os.path.join(self.run_dir, device_round_lib.SUBDIR,
                           'round_1.json')) as f:
      outcomes = json.load(f)['outcomes']
    self.assertEqual([o['status'] for o in outcomes],
                     ['accepted', 'accepted', 'rejected'])
    self.assertIn('checksum', outcomes[2]['reason'])
    self.assertIn('slot 2: rejected', self.aggregate_out)

  def test_client_data_are_the_simulations_clients(self):
    with np.load(device_round_lib.client_data_path(
        self.round_dirs[0], 0)) as z:
      self.assertEqual(z['x'].dtype, np.float32)
      self.assertEqual(len(z['x']), len(z['y']))
      self.assertIn('shuffle_seed', z.files)

  def test_the_round_moves_the_model(self):
    rounds = device_round_lib.DeviceRounds(self.run_dir)
    with local_runtime.local_context():
      state = rounds.state()
    self.assertEqual(state.round, 2)
    trainable = [w for w, v in zip(rounds.final_weights,
                                   rounds.model.weights) if v.trainable]
    moved = max(float(np.abs(a - b).max())
                for a, b in zip(state.weights, trainable))
    self.assertGreater(moved, 1e-4)

  def test_operator_mistakes_are_one_line_errors(self):
    cases = {
        ('broadcast', '--round=0', f'--out_dir={self.tmp}/x'):
            'next device round is 2',
        ('aggregate', '--round=1', f'--updates_dir={self.round_dirs[1]}'):
            'next device round is 2',
        ('aggregate', '--round=2', f'--updates_dir={self.tmp}/none'):
            'not a directory',
        ('aggregate', '--round=2', f'--updates_dir={self.tmp}'):
            'no update_<slot>.bin',
        ('publish', '--round=2'): 'give one command',
        ('broadcast', '--round=2'): 'needs --out_dir',
    }
    for args, message in cases.items():
      child = _device_round(f'--run_dir={self.run_dir}', *args)
      _, err = child.communicate(timeout=600)
      lines = err.decode().strip().splitlines()
      self.assertEqual(child.returncode, 2, (args, err.decode()[-2000:]))
      self.assertLen(lines, 1, (args, lines))
      self.assertIn(message, lines[0], args)
    child = _device_round(f'--run_dir={self.tmp}/missing', 'broadcast',
                          '--round=0', f'--out_dir={self.tmp}/x')
    _, err = child.communicate(timeout=600)
    self.assertEqual(child.returncode, 2)
    self.assertIn('run directory not found', err.decode())


if __name__ == '__main__':
  absltest.main()
