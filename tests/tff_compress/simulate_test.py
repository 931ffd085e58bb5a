"""The main program end to end: run dir, resume, errors, no orphan workers."""

import io
import json
import os
import signal
import subprocess

from absl.testing import absltest
import numpy as np

from tests.tff_compress import process_utils
from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress import simulate_lib
from tff_compress.program import run_dir as run_dir_lib

_SMOKE = run_utils.SMOKE
_smoke_config = run_utils.smoke_config
_rows = run_utils.metrics_rows
_weights = run_utils.final_weights


def _simulate(*args, **popen_kwargs):
  return process_utils.popen_python(
      ['-m', 'tff_compress.simulate', f'--config={_SMOKE}', *args],
      **popen_kwargs)


class SimulateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # One uninterrupted 6-round reference run shared by the tests.
    cls.ref_dir = os.path.join(absltest.get_default_test_tmpdir(), 'ref')
    cls.ref_summary = simulate_lib.run(
        _smoke_config(rounds=6), cls.ref_dir, out=io.StringIO())

  def test_run_dir_contents(self):
    d = self.ref_dir
    for name in ('config.json', 'metrics.csv', 'summary.json', 'curves.png',
                 'final_weights.npz', 'tff_worker.log'):
      self.assertTrue(os.path.exists(os.path.join(d, name)), name)
    self.assertTrue(os.listdir(os.path.join(d, 'tb')))
    self.assertTrue(os.listdir(os.path.join(d, 'checkpoints')))
    rows = _rows(d)
    self.assertEqual([int(r['round']) for r in rows], [1, 2, 3, 4, 5, 6])
    for column in ('round', 'train_loss', 'eval_loss', 'eval_accuracy',
                   'bytes_down', 'bytes_up', 'client_flops', 'epsilon',
                   'round_seconds'):
      self.assertIn(column, rows[0])
    # Evaluation every 2 rounds; epsilon empty without DP.
    self.assertEqual([bool(r['eval_accuracy']) for r in rows],
                     [False, True, False, True, False, True])
    self.assertTrue(all(r['epsilon'] == '' for r in rows))
    params = self.ref_summary['model_params']
    for r in rows:
      self.assertEqual(int(r['bytes_down']), 4 * 4 * params)
      self.assertEqual(int(r['bytes_up']), 4 * (4 * params + 4))
      self.assertGreater(float(r['client_flops']), 0)
    with open(os.path.join(d, 'summary.json')) as f:
      summary = json.load(f)
    self.assertEqual(summary['rounds'], 6)
    self.assertGreater(summary['final_eval_accuracy'], 0.5)  # real learning
    self.assertLess(float(rows[-1]['train_loss']), float(rows[0]['train_loss']))
    with open(os.path.join(d, 'config.json')) as f:
      self.assertEqual(json.load(f)['rounds'], 6)

  def test_same_config_same_run_dir_name(self):
    def run_dir(cfg):
      return run_dir_lib.default_run_dir(cfg.name, config_lib.config_hash(cfg),
                                         base='/x')
    a = run_dir(_smoke_config())
    b = run_dir(_smoke_config())
    c = run_dir(_smoke_config(seed=1))
    self.assertEqual(a, b)
    self.assertNotEqual(a, c)
    self.assertTrue(os.path.basename(a).startswith('smoke-'))

  def test_sigterm_then_rerun_resumes_bit_identically(self):
    run_dir = self.create_tempdir().full_path
    child = _simulate('--config.rounds=6', f'--run_dir={run_dir}',
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    workers = []
    for raw in child.stdout:
      line = raw.decode()
      if line.startswith('round    1/6'):
        workers = process_utils.worker_pids_of(child.pid)
      if line.startswith('round    3/6'):
        child.send_signal(signal.SIGTERM)
        break
    child.stdout.read()  # EOF: nobody (no worker) holds the pipe
    self.assertEqual(child.wait(timeout=60), 128 + signal.SIGTERM)
    self.assertLen(workers, 1)
    self.assertTrue(process_utils.wait_dead(workers[0]))
    self.assertLessEqual(len(_rows(run_dir)), 4)

    rerun = _simulate('--config.rounds=6', f'--run_dir={run_dir}',
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = rerun.communicate(timeout=600)
    self.assertEqual(rerun.returncode, 0, err.decode()[-2000:])
    self.assertIn(b'resuming after round', out)
    for a, b in zip(_weights(run_dir), _weights(self.ref_dir)):
      np.testing.assert_array_equal(a, b)
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'round_seconds'}
                          for r in rows]
    self.assertEqual(strip(_rows(run_dir)), strip(_rows(self.ref_dir)))

  def test_other_config_in_same_run_dir_is_refused(self):
    before = _rows(self.ref_dir)
    child = _simulate('--config.rounds=6', '--config.client.learning_rate=0.5',
                      f'--run_dir={self.ref_dir}', stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=300)
    self.assertEqual(child.returncode, 2)
    lines = err.decode().strip().splitlines()
    self.assertLen(lines, 1)
    self.assertIn('client.learning_rate', lines[0])
    self.assertEqual(_rows(self.ref_dir), before)

  def test_federated_dropout_run(self):
    d = os.path.join(absltest.get_default_test_tmpdir(), 'dropout')
    summary = simulate_lib.run(
        _smoke_config(rounds=2, **{'dropout.keep': 0.5}), d, out=io.StringIO())
    ref = _rows(self.ref_dir)[:2]
    rows = _rows(d)
    # dense: 784 -> 64 -> 10; half of dense1's units: ~half the FLOPs/bytes.
    for row, base in zip(rows, ref):
      self.assertEqual(row['clients'], base['clients'])
      ratio = float(base['client_flops']) / float(row['client_flops'])
      self.assertBetween(ratio, 1.9, 2.1)
      self.assertBetween(int(base['bytes_down']) / int(row['bytes_down']),
                         1.9, 2.1)
    self.assertEqual(summary['client_model_params'], 784 * 32 + 32 + 330)
    self.assertEqual(summary['model_params'], 784 * 64 + 64 + 650)
    self.assertGreater(summary['final_eval_accuracy'], 0.15)  # chance: 0.1

  def test_cohort_run_equals_the_per_client_run(self):
    # runtime.cohort_size=2: the 4 clients of a round as 2 TFF clients of 2
    # (cohorts/), through the whole driver: sampling, slots, bytes, eval.
    d = os.path.join(absltest.get_default_test_tmpdir(), 'cohorts')
    summary = simulate_lib.run(
        _smoke_config(rounds=6, **{'runtime.cohort_size': 2}), d,
        out=io.StringIO())
    for row, base in zip(_rows(d), _rows(self.ref_dir), strict=True):
      for key in ('clients', 'bytes_down', 'bytes_up', 'client_flops'):
        self.assertEqual(row[key], base[key], key)
      for key in ('train_loss', 'train_accuracy', 'eval_accuracy'):
        if base[key]:
          self.assertAlmostEqual(float(row[key]), float(base[key]), places=4)
    for got, want in zip(_weights(d), _weights(self.ref_dir), strict=True):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    self.assertAlmostEqual(summary['final_eval_accuracy'],
                           self.ref_summary['final_eval_accuracy'], places=4)

  def test_run_dir_that_is_a_file_is_a_one_line_error(self):
    path = self.create_tempfile('not_a_dir').full_path
    child = _simulate(f'--run_dir={path}', stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    _, err = child.communicate(timeout=300)
    lines = err.decode().strip().splitlines()
    self.assertEqual(child.returncode, 2, err.decode()[-1500:])
    self.assertLen(lines, 1)
    self.assertIn('is not a directory', lines[0])
    self.assertNotIn('Traceback', err.decode())

  def test_failed_start_does_not_claim_the_run_dir(self):
    """A start that fails (missing EMNIST cache) leaves nothing that refuses
    the corrected command in the same --run_dir."""
    run_dir = os.path.join(self.create_tempdir().full_path, 'run')
    child = _simulate('--config.data.name=emnist',
                      f'--config.data.cache_dir={run_dir}_no_cache',
                      f'--run_dir={run_dir}', stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    _, err = child.communicate(timeout=300)
    self.assertEqual(child.returncode, 2, err.decode()[-1500:])
    self.assertLen(err.decode().strip().splitlines(), 1)
    self.assertFalse(os.path.exists(os.path.join(run_dir, 'config.json')))
    summary = simulate_lib.run(_smoke_config(rounds=1), run_dir,
                               out=io.StringIO())
    self.assertEqual(summary['rounds'], 1)

  def test_bad_configs_get_one_line_errors(self):
    cases = {
        '--config.rounds=0': "'rounds'",
        '--config.nope=1': 'nope',
        '--config.rounds=abc': 'rounds',
        '--config.data.partition=zipf': 'dirichlet',
        '--config.model.name=resnet9': 'caldas_cnn',
        '--config.clients_per_round=500': 'data.num_clients',
        '--config.client.learning_rate=-1': 'client.learning_rate',
        '--config.broadcast.bits=0': 'broadcast.bits',
        '--config.uplink.subsample=1.5': 'uplink.subsample',
        '--config.uplink.transform=fft': 'kashin',
        '--config.dropout.keep=0': 'dropout.keep',
        '--config.dropout.per_layer=conv1=0.5': 'dense1',
    }
    for flag, expected in cases.items():
      child = _simulate(flag, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
      out, err = child.communicate(timeout=300)
      lines = err.decode().strip().splitlines()
      self.assertEqual(child.returncode, 2, (flag, err.decode()[-1500:]))
      self.assertLen(lines, 1, (flag, lines))
      self.assertIn(expected, lines[0], flag)
      self.assertNotIn('Traceback', err.decode())


if __name__ == '__main__':
  absltest.main()
