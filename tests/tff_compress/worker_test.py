"""Simulation on remote TFF workers over loopback: equality, failures, hygiene.

Two `tff_compress.worker` processes serve the whole class; they are started
and stopped (SIGTERM, exit 0) by the class, and their `worker_binary`
children must be gone afterwards.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import tempfile

from absl.testing import absltest
import numpy as np
import portpicker

from tests.tff_compress import process_utils
from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress import simulate_lib
from tff_compress.data import store as store_lib
from tff_compress.runtime import errors as runtime_errors
from tff_compress.runtime import feed
from tff_compress.runtime import remote
from tff_compress.runtime import settings as runtime_settings

_SMOKE = run_utils.SMOKE
_rows = run_utils.metrics_rows
_weights = run_utils.final_weights
_FLOAT_COLUMNS = ('train_loss', 'train_accuracy', 'eval_loss',
                  'eval_accuracy')
_EXACT_COLUMNS = ('round', 'bytes_down', 'bytes_up', 'client_flops',
                  'clients')


def _config(workers='', data_dir='', **overrides):
  return run_utils.smoke_config(**{'runtime.workers': workers,
                                   'runtime.worker_data_dir': data_dir},
                                **overrides)


class _Worker:
  """A `python -m tff_compress.worker` process on a loopback port."""

  def __init__(self, data_dir, port=None):
    self.port = port or portpicker.pick_unused_port()
    self.process = process_utils.popen_python(
        ['-m', 'tff_compress.worker', f'--port={self.port}',
         f'--data_dir={data_dir}'],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

  @property
  def target(self):
    return f'127.0.0.1:{self.port}'

  def wait_serving(self):
    line = self.process.stdout.readline().decode()
    if 'serving on port' not in line:
      raise AssertionError(f'worker did not start: {line!r}')
    self.binary_pids = process_utils.worker_pids_of(self.process.pid)

  def stop(self):
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
    code = self.process.wait(timeout=60)
    self.process.stdout.close()
    return code


class RemoteWorkersTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.data_dir = os.path.join(tmp, 'worker_data')
    os.makedirs(cls.data_dir, exist_ok=True)
    cls.workers = [_Worker(cls.data_dir), _Worker(cls.data_dir)]
    for w in cls.workers:
      w.wait_serving()
    cls.targets = ','.join(w.target for w in cls.workers)
    cls.local_dir = os.path.join(tmp, 'local')
    simulate_lib.run(_config(), cls.local_dir, out=io.StringIO())
    cls.remote_dir = os.path.join(tmp, 'remote')
    cls.remote_out = io.StringIO()
    simulate_lib.run(_config(cls.targets, cls.data_dir), cls.remote_dir,
                     out=cls.remote_out)

  @classmethod
  def tearDownClass(cls):
    pids = [p for w in cls.workers for p in w.binary_pids]
    codes = [w.stop() for w in cls.workers]
    super().tearDownClass()
    # SIGTERM is a clean stop, and no worker_binary outlives its wrapper.
    assert codes == [0] * len(codes), codes
    for pid in pids:
      assert process_utils.wait_dead(pid), f'worker_binary {pid} survived'

  def test_each_wrapper_runs_one_worker_binary(self):
    for w in self.workers:
      self.assertLen(w.binary_pids, 1)
      self.assertTrue(process_utils.is_alive(w.binary_pids[0]))

  def test_two_workers_give_the_local_metrics(self):
    local, remote = _rows(self.local_dir), _rows(self.remote_dir)
    self.assertLen(remote, 4)
    for a, b in zip(local, remote):
      for key in _EXACT_COLUMNS:
        self.assertEqual(a[key], b[key], key)
      for key in _FLOAT_COLUMNS:
        self.assertEqual(bool(a[key]), bool(b[key]), key)
        if a[key]:
          # Partial sums merged across workers: float32 rounding only.
          np.testing.assert_allclose(float(b[key]), float(a[key]),
                                     rtol=1e-5, err_msg=key)
    for a, b in zip(_weights(self.local_dir), _weights(self.remote_dir)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    self.assertIn('2 remote TFF workers', self.remote_out.getvalue())
    # The driver prepared the store the workers read, in their data dir.
    self.assertLen(os.listdir(os.path.join(self.data_dir, 'client_data')), 1)

  def test_workers_do_not_change_the_run_identity(self):
    self.assertEqual(config_lib.config_hash(_config()),
                     config_lib.config_hash(_config(self.targets, '/x')))
    with open(os.path.join(self.remote_dir, 'config.json')) as f:
      self.assertNotIn('runtime', f.read())

  def test_federated_dropout_on_workers_matches_local(self):
    # Struct client inputs (<key, data>) are rebuilt on the workers.
    tmp = self.create_tempdir().full_path
    overrides = {'rounds': 1, 'dropout.keep': 0.5}
    simulate_lib.run(_config(**overrides), os.path.join(tmp, 'a'),
                     out=io.StringIO())
    simulate_lib.run(_config(self.targets, self.data_dir, **overrides),
                     os.path.join(tmp, 'b'), out=io.StringIO())
    for a, b in zip(_rows(os.path.join(tmp, 'a')),
                    _rows(os.path.join(tmp, 'b'))):
      self.assertEqual(a['bytes_down'], b['bytes_down'])
      np.testing.assert_allclose(float(b['train_loss']),
                                 float(a['train_loss']), rtol=1e-5)

  def test_cohorts_spread_over_workers_match_per_client_local(self):
    # runtime.cohort_size=2: the round's 4 clients as 2 cohorts, one per
    # worker, each stacked there from its store (`feed.cohort_training_next`)
    # -- with Federated Dropout, whose mask key is the stacked slot.
    tmp = self.create_tempdir().full_path
    cases = {'plain': ({}, self.local_dir)}
    fd = {'rounds': 2, 'dropout.keep': 0.5}
    simulate_lib.run(_config(**fd), os.path.join(tmp, 'fd_local'),
                     out=io.StringIO())
    cases['dropout'] = (fd, os.path.join(tmp, 'fd_local'))
    for name, (overrides, local_dir) in cases.items():
      remote_dir = os.path.join(tmp, name)
      simulate_lib.run(
          _config(self.targets, self.data_dir,
                  **{'runtime.cohort_size': 2, **overrides}),
          remote_dir, out=io.StringIO())
      local, remote = _rows(local_dir), _rows(remote_dir)
      self.assertLen(remote, len(local))
      for a, b in zip(local, remote):
        for key in _EXACT_COLUMNS:
          self.assertEqual(a[key], b[key], f'{name} {key}')
        for key in _FLOAT_COLUMNS:
          if a[key]:
            np.testing.assert_allclose(float(b[key]), float(a[key]),
                                       rtol=1e-4, err_msg=f'{name} {key}')
      for a, b in zip(_weights(local_dir), _weights(remote_dir), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)

  def test_device_tiers_on_workers_match_local(self):
    # One computation per tier (and a tier without clients) split across
    # the workers, and each tier's deployed model evaluated there.
    tmp = self.create_tempdir().full_path
    overrides = {'rounds': 2, 'eval_every': 2,
                 'tiers.mix': 'big:1:1.0, mid:1:0.5, low:1:0.25'}
    simulate_lib.run(_config(**overrides), os.path.join(tmp, 'a'),
                     out=io.StringIO())
    simulate_lib.run(_config(self.targets, self.data_dir, **overrides),
                     os.path.join(tmp, 'b'), out=io.StringIO())
    for a, b in zip(_rows(os.path.join(tmp, 'a')),
                    _rows(os.path.join(tmp, 'b'))):
      for key in a:
        if key.endswith(('clients', 'bytes_down', 'bytes_up', 'flops')):
          self.assertEqual(a[key], b[key], key)
        elif key.endswith(('loss', 'accuracy')) and a[key]:
          np.testing.assert_allclose(float(b[key]), float(a[key]),
                                     rtol=1e-4, err_msg=key)

  def test_worker_without_the_data_is_named(self):
    other = store_lib.Store('f' * 16, (28, 28, 1), 20, 1000, '/elsewhere')
    with remote.remote_context(self.targets.split(',')) as cluster:
      with self.assertRaisesRegex(store_lib.StoreError,
                                  f'{self.workers[0].target}, '
                                  f'{self.workers[1].target} cannot read'):
        feed.check_workers(cluster, other)

  def test_rpc_deadline_names_a_frozen_worker(self):
    frozen = self.workers[1]
    with remote.remote_context(self.targets.split(','),
                                rpc_timeout=3.0) as cluster:
      read = feed.fingerprint_reader(
          store_lib.Store('f' * 16, (1,), 1, 1, '/x'))
      os.kill(frozen.binary_pids[0], signal.SIGSTOP)
      try:
        with self.assertRaisesRegex(
            runtime_errors.WorkerUnavailableError,
            f'{frozen.target} did not answer within the RPC deadline of 3 s'):
          cluster.run_on(cluster.workers[1], read)
      finally:
        os.kill(frozen.binary_pids[0], signal.SIGCONT)

  def test_killed_worker_fails_the_round_and_rerun_resumes(self):
    run_dir = self.create_tempdir().full_path
    config = _config(self.targets, self.data_dir)
    victim = self.workers[1]

    def kill_after_round_2(round_num):
      if round_num == 2:
        victim.process.kill()  # SIGKILL: its worker_binary dies with it
        victim.process.wait()
        self.assertTrue(process_utils.wait_dead(victim.binary_pids[0]))

    with self.assertRaisesRegex(runtime_errors.WorkerLostError,
                                f'lost TFF worker {victim.target}'):
      simulate_lib.run(config, run_dir, out=io.StringIO(),
                       after_round=kill_after_round_2)
    self.assertEqual([r['round'] for r in _rows(run_dir)], ['1', '2'])
    victim.stop()
    # Same port, same command: the run resumes after round 2.
    restarted = _Worker(self.data_dir, port=victim.port)
    type(self).workers[1] = restarted
    restarted.wait_serving()
    out = io.StringIO()
    simulate_lib.run(config, run_dir, out=out)
    self.assertIn('resuming after round 2', out.getvalue())
    # Same clients on the same workers as the uninterrupted run: identical.
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'round_seconds'}
                          for r in rows]
    self.assertEqual(strip(_rows(run_dir)), strip(_rows(self.remote_dir)))
    for a, b in zip(_weights(run_dir), _weights(self.remote_dir)):
      np.testing.assert_array_equal(a, b)


class BinaryErrorsTest(absltest.TestCase):
  """User-facing failures: one line on stderr, exit status 2."""

  def test_one_line_errors(self):
    free = portpicker.pick_unused_port()
    socket_holder = socket.socket()
    socket_holder.bind(('127.0.0.1', 0))
    socket_holder.listen()
    busy = socket_holder.getsockname()[1]
    run_dir = self.create_tempdir().full_path
    cases = {
        # A worker down at start is named; nothing is trained.
        'simulate_down': (['-m', 'tff_compress.simulate',
                           f'--config={_SMOKE}', f'--run_dir={run_dir}',
                           f'--workers=127.0.0.1:{free}',
                           '--config.runtime.connect_timeout=2'],
                          f'127.0.0.1:{free} not reachable within 2 s'),
        'bad_list': (['-m', 'tff_compress.simulate', f'--config={_SMOKE}',
                      '--workers=host-without-port'],
                     'host-without-port'),
        'port_busy': (['-m', 'tff_compress.worker', f'--port={busy}'],
                      f'port {busy} is already in use'),
    }
    try:
      children = {name: process_utils.popen_python(
          args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                  for name, (args, _) in cases.items()}
      for name, child in children.items():
        _, err = child.communicate(timeout=300)
        lines = err.decode().strip().splitlines()
        self.assertEqual(child.returncode, 2, (name, err.decode()[-1500:]))
        self.assertLen(lines, 1, (name, lines))
        self.assertIn(cases[name][1], lines[0], name)
    finally:
      socket_holder.close()
    self.assertFalse(os.path.exists(os.path.join(run_dir, 'metrics.csv')))


class ParseWorkersTest(absltest.TestCase):

  def test_valid_lists(self):
    self.assertEqual(runtime_settings.parse_workers(''), [])
    self.assertEqual(runtime_settings.parse_workers(' a:1 , [::1]:65535'),
                     ['a:1', '[::1]:65535'])

  def test_invalid_lists_name_the_entry(self):
    for spec, message in [('a', "'a' is not host:port"),
                          (':80', "':80' is not host:port"),
                          ('a:0', 'not in 1..65535'),
                          ('a:x', 'not in 1..65535'),
                          ('a:1,a:1', 'listed twice'),
                          ('a:1,', "'' is not host:port")]:
      with self.assertRaisesRegex(runtime_settings.WorkerAddressError, message):
        runtime_settings.parse_workers(spec)

  def test_config_rule_names_the_key(self):
    with self.assertRaisesRegex(config_lib.ConfigError,
                                "'runtime.workers'.*host:port"):
      _config('nohost')


if __name__ == '__main__':
  absltest.main()
