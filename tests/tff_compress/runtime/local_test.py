"""The TFF worker dies with its parent, however the parent ends."""

import signal
import subprocess
import time

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow_federated as tff

from tests.tff_compress import process_utils
from tff_compress.runtime import errors
from tff_compress.runtime import local as local_runtime

# A child that starts the managed runtime, runs a computation, reports the
# worker pid and then behaves as told by argv[1].
_CHILD = r'''
import sys, time
import numpy as np
import tensorflow_federated as tff
from tff_compress.runtime import local as local_runtime

@tff.tensorflow.computation(np.int32)
def add_one(x):
  return x + 1

mode = sys.argv[1]
with local_runtime.local_context() as worker:
  assert add_one(41) == 42
  print(f"WORKER {worker.pid}", flush=True)
  if mode == 'exit':
    pass
  elif mode == 'raise':
    raise ValueError('boom')
  else:
    while True:
      time.sleep(0.2)
print("LEFT BLOCK", flush=True)
'''


@tff.tensorflow.computation(np.int32)
def _add_one(x):
  return x + 1


class LocalContextTest(parameterized.TestCase):

  def test_runs_computation_and_stops_worker(self):
    with local_runtime.local_context() as worker:
      self.assertEqual(_add_one(1), 2)
      self.assertTrue(process_utils.is_alive(worker.pid))
    self.assertTrue(process_utils.wait_dead(worker.pid))

  def test_exception_in_block_stops_worker(self):
    with self.assertRaises(ZeroDivisionError):
      with local_runtime.local_context() as worker:
        pid = worker.pid
        _ = 1 / 0
    self.assertTrue(process_utils.wait_dead(pid))

  def test_invocation_outside_block_is_refused(self):
    with local_runtime.local_context():
      pass
    with self.assertRaisesRegex(errors.RuntimeError_, 'local_context'):
      _add_one(1)

  def test_dead_worker_is_reported(self):
    with local_runtime.local_context() as worker:
      self.assertEqual(_add_one(1), 2)
      worker.process.kill()
      worker.process.wait()
      with self.assertRaisesRegex(Exception, 'exited|not reachable|worker'):
        _add_one(2)

  @parameterized.named_parameters(
      ('normal_exit', 'exit', None, 0),
      ('exception', 'raise', None, 1),
      ('sigterm', 'loop', signal.SIGTERM, 128 + signal.SIGTERM),
      ('sigint', 'loop', signal.SIGINT, -signal.SIGINT),  # KeyboardInterrupt
      ('sigkill', 'loop', signal.SIGKILL, -signal.SIGKILL),
  )
  def test_child_program_leaves_no_worker(self, mode, sig, expected_code):
    # stdout is a pipe, as under CI: EOF must arrive once the child is gone,
    # which fails if any worker kept the pipe open.
    child = process_utils.popen_python(
        [ '-c', _CHILD, mode], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    line = child.stdout.readline().decode()
    self.assertTrue(line.startswith('WORKER '), line)
    worker_pid = int(line.split()[1])
    if sig is not None:
      # The child is parked in its loop: its one worker is alive.
      self.assertEqual(process_utils.worker_pids_of(child.pid), [worker_pid])
      time.sleep(0.5)
      child.send_signal(sig)
    rest = child.stdout.read()  # blocks until every writer closed the pipe
    code = child.wait(timeout=60)
    self.assertTrue(process_utils.wait_dead(worker_pid),
                    f'worker {worker_pid} survived {mode}/{sig}')
    if expected_code is not None:
      self.assertEqual(code, expected_code)
    if mode == 'exit':
      self.assertIn(b'LEFT BLOCK', rest)


if __name__ == '__main__':
  absltest.main()
