"""Personalization from config through the TFF runtime: run dir, resume."""

import csv
import io
import json
import os
import subprocess

from absl.testing import absltest
import numpy as np

from tests.tff_compress import process_utils
from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress import simulate_lib
from tff_compress.personalization import evaluation
from tff_compress.program import checkpoints
from tff_compress.program import sampling
from tff_compress.runtime import local as local_runtime

_P13N = {'personalization.evaluate': True, 'personalization.every': 2,
         'personalization.eval_clients': 6}


def _config(**overrides):
  return run_utils.smoke_config(**{**_P13N, **overrides})


def _table(run_dir):
  with open(os.path.join(run_dir, 'personalization.csv'), newline='') as f:
    return list(csv.DictReader(f))


def _strip(rows):
  return [{k: v for k, v in r.items() if k != 'round_seconds'} for r in rows]


class FineTuningRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.run_dir = os.path.join(absltest.get_default_test_tmpdir(), 'fedavg')
    cls.summary = simulate_lib.run(_config(), cls.run_dir, out=io.StringIO())

  def test_metrics_table_summary_and_plot(self):
    rows = run_utils.metrics_rows(self.run_dir)
    evaluated = [int(r['round']) for r in rows if r['p13n_global_mean']]
    self.assertEqual(evaluated, [2, 4])
    table = _table(self.run_dir)
    self.assertEqual([int(r['round']) for r in table], [2] * 6 + [4] * 6)
    last = [r for r in table if r['round'] == '4']
    g = np.array([float(r['global_accuracy']) for r in last])
    f = np.array([float(r['finetuned_accuracy']) for r in last])
    self.assertAlmostEqual(float(rows[-1]['p13n_global_mean']), g.mean(),
                           places=6)
    self.assertAlmostEqual(float(rows[-1]['p13n_finetuned_p90']),
                           np.percentile(f, 90), places=6)
    block = self.summary['personalization']
    self.assertEqual(block['round'], 4)
    self.assertAlmostEqual(block['worse_share'], float(np.mean(f < g)))
    self.assertEqual(block['baseline'], 'the global model')
    with open(os.path.join(self.run_dir, 'summary.json')) as file:
      self.assertEqual(json.load(file)['personalization'], block)
    self.assertTrue(os.path.exists(
        os.path.join(self.run_dir, 'personalization.png')))

  def test_training_never_sees_the_held_out_parts(self):
    cfg = _config()
    algorithm = simulate_lib.build_algorithm(cfg)
    held, data = algorithm.held_out, algorithm.held_out.train
    train = np.array([data.client_size(c) for c in data.client_ids])
    held_out = np.array([len(held.held_out(i)[1]) for i in range(len(train))])
    self.assertEqual(train.sum() + held_out.sum(), 4000)
    # client_flops counts the examples each sampled client trained on:
    # exactly its train part.
    per_example = algorithm.task.train_flops_per_example
    for r in run_utils.metrics_rows(self.run_dir):
      picked = sampling.sample_clients(len(train), cfg.clients_per_round,
                                       cfg.seed, int(r['round']))
      self.assertEqual(float(r['client_flops']),
                       float(np.mean(train[picked] * per_example)))

  def test_no_personalization_no_table(self):
    run_dir = self.create_tempdir().full_path
    summary = simulate_lib.run(run_utils.smoke_config(rounds=1), run_dir,
                               out=io.StringIO())
    self.assertNotIn('personalization', summary)
    self.assertFalse(os.path.exists(
        os.path.join(run_dir, 'personalization.csv')))
    row = run_utils.metrics_rows(run_dir)[0]
    self.assertTrue(all(row[c] == '' for c in evaluation.COLUMNS))


class _Stop(Exception):
  pass


class FedPerRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ref_dir = os.path.join(absltest.get_default_test_tmpdir(), 'fedper')
    cls.summary = simulate_lib.run(_config(algorithm='fedper'), cls.ref_dir,
                                   out=io.StringIO())

  def test_bytes_eval_and_summary(self):
    rows = run_utils.metrics_rows(self.ref_dir)
    shared = self.summary['fedper']['shared_params']
    self.assertEqual(shared + self.summary['fedper']['local_params_per_client'],
                     self.summary['model_params'])
    self.assertEqual(self.summary['fedper']['local_params_per_client'],
                     64 * 10 + 10)
    for r in rows:
      self.assertEqual(int(r['bytes_down']), 4 * 4 * shared)
      self.assertEqual(int(r['bytes_up']), 4 * (4 * shared + 4))
    self.assertEqual([bool(r['eval_accuracy']) for r in rows],
                     [False, True, False, True])
    self.assertIn('FedPer', self.summary['personalization']['baseline'])

  def test_interrupted_run_resumes_bit_identically(self):
    run_dir = self.create_tempdir().full_path

    def stop(round_num):
      if round_num == 3:
        raise _Stop()

    with self.assertRaises(_Stop):
      simulate_lib.run(_config(algorithm='fedper'), run_dir,
                       out=io.StringIO(), after_round=stop)
    self.assertLen(run_utils.metrics_rows(run_dir), 3)
    out = io.StringIO()
    simulate_lib.run(_config(algorithm='fedper'), run_dir, out=out)
    self.assertIn('resuming after round 3', out.getvalue())
    self.assertEqual(_strip(run_utils.metrics_rows(run_dir)),
                     _strip(run_utils.metrics_rows(self.ref_dir)))
    self.assertEqual(_table(run_dir), _table(self.ref_dir))
    for a, b in zip(run_utils.final_weights(run_dir),
                    run_utils.final_weights(self.ref_dir)):
      np.testing.assert_array_equal(a, b)
    # Every client's local layers, from the last checkpoints.
    algorithm = simulate_lib.build_algorithm(_config(algorithm='fedper'))
    with local_runtime.local_context():
      template = algorithm.initial_state()
    states = [checkpoints.Checkpoints(os.path.join(d, 'checkpoints'))
              .load_latest(template) for d in (run_dir, self.ref_dir)]
    self.assertEqual(states[0][1], 4)
    trained = 0
    for mine, ref, first in zip(states[0][0]['local'], states[1][0]['local'],
                                template['local']):
      for a, b, c in zip(mine, ref, first):
        np.testing.assert_array_equal(a, b)
        trained += not np.array_equal(a, c)
    self.assertGreater(trained, 0)


class ConfigErrorsTest(absltest.TestCase):

  def test_unsupported_combinations_name_the_key(self):
    cases = [
        ({'algorithm': 'fedper', 'dropout.keep': 0.5},
         "'algorithm' is 'fedper'; Federated Dropout"),
        ({'algorithm': 'fedper', 'faults.drop_prob': 0.1},
         "'algorithm' is 'fedper'; client faults"),
        ({'algorithm': 'fedper', 'fedper.layers': 'dense9'},
         r"'fedper.layers' is 'dense9': names 'dense9'"),
        ({'algorithm': 'fedper', 'fedper.layers': 'dense1,logits'},
         'nothing would be federated'),
        ({'personalization.evaluate': True, 'algorithm': 'fedgkt',
          'model.name': 'resnet20'},
         "'personalization.evaluate' is true with algorithm='fedgkt'"),
        ({'personalization.evaluate': True,
          'runtime.workers': 'localhost:8000'},
         'needs local execution'),
        ({'personalization.evaluate': True,
          'personalization.eval_clients': 21},
         r"'personalization.eval_clients' is 21; allowed: 0..data.num_clients"
         r' \(20\)'),
        ({'personalization.evaluate': True, 'personalization.layers': 'x'},
         "'personalization.layers' is 'x'"),
        ({'personalization.optimizer': 'rmsprop'},
         "'personalization.optimizer' is 'rmsprop'; allowed: sgd, adam"),
    ]
    for overrides, expected in cases:
      with self.subTest(overrides):
        with self.assertRaisesRegex(config_lib.ConfigError, expected):
          run_utils.smoke_config(**overrides)

  def test_fedper_composes_with_fedprox_codecs_and_dp(self):
    cfg = run_utils.smoke_config(**{
        'algorithm': 'fedper', 'rounds': 1, 'client.work': 'fedprox',
        'client.proximal_strength': 0.1, 'broadcast.bits': 8,
        'uplink.transform': 'hadamard', 'uplink.bits': 4, 'dp.mode': 'user',
        'dp.noise_multiplier': 0.1})
    summary = simulate_lib.run(cfg, self.create_tempdir().full_path,
                               out=io.StringIO())
    self.assertGreater(summary['compression_up_vs_float32'], 7.0)
    self.assertIsNotNone(summary['epsilon'])

  def test_command_line_error_is_one_line(self):
    child = process_utils.popen_python(
        ['-m', 'tff_compress.simulate', f'--config={run_utils.SMOKE}',
         '--config.algorithm=fedper', '--config.faults.deadline=5'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = child.communicate(timeout=300)
    lines = err.decode().strip().splitlines()
    self.assertEqual(child.returncode, 2, err.decode()[-1500:])
    self.assertLen(lines, 1)
    self.assertIn('client faults', lines[0])


if __name__ == '__main__':
  absltest.main()
