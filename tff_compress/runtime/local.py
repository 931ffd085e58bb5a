"""The local TFF worker: the one place that starts `worker_binary` and owns it.

TFF 0.87's `tff.backends.native.set_sync_local_cpp_execution_context()` starts a
C++ `worker_binary` that inherits the caller's stdout and outlives the caller
when it is killed; a pipe reading that stdout (CI, `| tee`) then never closes.
This module starts the worker itself so that:

* its stdout/stderr go to a log file, never to the caller's stdout;
* the kernel kills it when the Python process dies for any reason, SIGKILL
  included (``PR_SET_PDEATHSIG``);
* normal exit, exceptions, SIGINT and SIGTERM stop it explicitly (atexit and a
  SIGTERM handler that turns the signal into ``SystemExit``);
* a worker that died mid-run is reported as :class:`WorkerDiedError` naming
  its log, instead of TFF silently starting a new one.

Usage::

    with runtime.local_context(log_dir=run_dir):
      ...  # TFF computations run in the C++ runtime

`runtime.remote.remote_context` instead connects to workers started
elsewhere (``tff_compress.worker``, one per host:port) and spreads the
clients of each computation over them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import tempfile
import threading
import time
from typing import Iterator, Optional

import grpc
import portpicker

from tff_compress.runtime import errors

_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT_S = 60.0
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
GRPC_CHANNEL_OPTIONS = (
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
)





def worker_binary_path() -> str:
  """Path of the C++ worker shipped inside the tensorflow_federated wheel."""
  import tensorflow_federated  # pylint: disable=g-import-not-at-top

  path = os.path.join(
      os.path.dirname(tensorflow_federated.__file__), 'data', 'worker_binary'
  )
  if not os.path.isfile(path):
    raise errors.WorkerStartError(f'TFF worker binary not found at {path}')
  return path


def _log_tail(path: Optional[str], lines: int = 15) -> str:
  if not path or not os.path.exists(path):
    return ''
  with open(path, 'rb') as f:
    tail = f.read()[-4000:].decode('utf-8', 'replace').splitlines()[-lines:]
  return '\n'.join(tail)


class LocalWorker:
  """A `worker_binary` child process bound to the lifetime of this process."""

  def __init__(
      self,
      log_path: Optional[str] = None,
      max_concurrent_computation_calls: int = -1,
      port: Optional[int] = None,
      cwd: Optional[str] = None,
      inherit_output: bool = False,
  ):
    """Starts the worker.

    Args:
      log_path: File receiving the worker's stdout/stderr (a temporary file
        when None).
      max_concurrent_computation_calls: Passed to the worker; <= 0: no limit.
      port: TCP port to serve on (a free one when None).
      cwd: The worker's working directory (relative file paths in
        computations resolve against it).
      inherit_output: Write to this process's stdout/stderr instead of
        `log_path` (a standalone worker whose output a supervisor collects).
    """
    self.port = port or portpicker.pick_unused_port()
    if inherit_output:
      log_path = None
    elif log_path is None:
      fd, log_path = tempfile.mkstemp(prefix='tff_worker_', suffix='.log')
      os.close(fd)
    self.log_path = log_path
    parent_pid = os.getpid()

    def _die_with_parent():  # runs in the child between fork and exec
      libc = ctypes.CDLL(None, use_errno=True)
      libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
      if os.getppid() != parent_pid:  # parent died before prctl took effect
        os._exit(1)  # pylint: disable=protected-access

    args = [
        worker_binary_path(),
        f'--port={self.port}',
        f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
    ]
    with contextlib.ExitStack() as stack:
      log = (stack.enter_context(open(self.log_path, 'ab'))
             if self.log_path else None)
      self.process = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn
          args,
          stdin=subprocess.DEVNULL,
          stdout=log,
          stderr=subprocess.STDOUT if log else None,
          preexec_fn=_die_with_parent,
          close_fds=True,
          cwd=cwd,
      )
    _LIVE_WORKERS.add(self)

  @property
  def pid(self) -> int:
    return self.process.pid

  @property
  def target(self) -> str:
    return f'localhost:{self.port}'

  def alive(self) -> bool:
    return self.process.poll() is None

  def describe_death(self) -> str:
    code = self.process.poll()
    tail = _log_tail(self.log_path)
    msg = f'TFF worker pid {self.pid} on {self.target} exited with code {code}'
    msg += f' (log: {self.log_path})'
    if tail:
      msg += '\n' + tail
    return msg

  def stop(self, timeout: float = 10.0) -> None:
    """Stops the worker: SIGINT, then SIGKILL after `timeout` seconds."""
    _LIVE_WORKERS.discard(self)
    if self.process.poll() is not None:
      return
    try:
      self.process.send_signal(signal.SIGINT)
      self.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    except ProcessLookupError:
      pass


_LIVE_WORKERS: set = set()
_HANDLERS_INSTALLED = False
_LOCK = threading.Lock()


def _stop_all_workers() -> None:
  for worker in list(_LIVE_WORKERS):
    worker.stop(timeout=5.0)


def _on_sigterm(signum, frame):  # pylint: disable=unused-argument
  _stop_all_workers()
  # Unwind like an exception so `finally` blocks and atexit hooks still run
  # (checkpoints already on disk stay consistent).
  raise SystemExit(128 + signum)


def install_exit_handlers() -> None:
  """Makes normal exit, exceptions, SIGINT and SIGTERM stop our workers."""
  global _HANDLERS_INSTALLED
  with _LOCK:
    if _HANDLERS_INSTALLED:
      return
    atexit.register(_stop_all_workers)
    if threading.current_thread() is threading.main_thread():
      if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    _HANDLERS_INSTALLED = True


def wait_ready(stub, worker: Optional[LocalWorker], target: str) -> None:
  """Blocks until `stub` is ready; `worker` (if local) must stay alive."""
  deadline = time.monotonic() + _READY_TIMEOUT_S
  while not stub.is_ready:
    if worker is not None and not worker.alive():
      raise errors.WorkerStartError(worker.describe_death())
    if time.monotonic() > deadline:
      raise errors.WorkerStartError(
          f'TFF worker at {target} not ready after {_READY_TIMEOUT_S:.0f}s'
      )
    time.sleep(0.1)


def without_secure_sums(comp):
  """The C++ worker has no secure-sum intrinsic; like TFF's test context,
  simulate it by a plain sum that asserts the declared bounds (a no-op for
  computations without secure sums; see privacy/secure.py)."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.backends.test import compiler as test_compiler
  # pylint: enable=g-import-not-at-top
  return test_compiler.replace_secure_intrinsics_with_bodies(comp)


def wait_serving(worker: LocalWorker) -> None:
  """Blocks until `worker` answers gRPC on its port.

  Raises:
    errors.WorkerStartError: It exited, or was not ready within 60 s.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
  # pylint: enable=g-import-not-at-top
  channel = grpc.insecure_channel(worker.target, GRPC_CHANNEL_OPTIONS)
  try:
    wait_ready(remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel),
                worker, worker.target)
  finally:
    channel.close()


def make_context(stub, worker: Optional[LocalWorker], target: str,
                  asynchronous: bool = False):
  """A TFF context executing on one worker's stub (sync, or async for pools)."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.backends.native import compiler
  from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
  from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
  from tensorflow_federated.python.core.impl.execution_contexts import sync_execution_context
  from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
  from tensorflow_federated.python.core.impl.executors import remote_executor
  from tensorflow_federated.python.core.impl.types import placements
  # pylint: enable=g-import-not-at-top

  def stack_fn(cardinalities):
    if worker is not None and not worker.alive():
      raise errors.WorkerDiedError(worker.describe_death())
    if not stub.is_ready:
      raise errors.WorkerDiedError(f'TFF worker at {target} is not reachable')
    cardinalities.setdefault(placements.CLIENTS, 0)
    executor = remote_executor.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  factory = python_executor_stacks.ResourceManagingExecutorFactory(
      executor_stack_fn=stack_fn
  )

  def compile_fn(comp):
    return compiler.desugar_and_transform_to_native(without_secure_sums(comp))

  context_class = (async_execution_context.AsyncExecutionContext
                   if asynchronous else
                   sync_execution_context.SyncExecutionContext)
  return context_class(
      executor_fn=factory,
      compiler_fn=compile_fn,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )


@contextlib.contextmanager
def local_context(log_dir: Optional[str] = None) -> Iterator[LocalWorker]:
  """Runs TFF computations on a private local C++ worker for the block.

  The worker is started from the calling thread (so PDEATHSIG follows this
  process), installed as TFF's default context, and stopped on exit from the
  block, however the block exits.

  Args:
    log_dir: Directory for `tff_worker.log`; a temporary file when None.

  Yields:
    The running :class:`LocalWorker`.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
  from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
  # pylint: enable=g-import-not-at-top

  install_exit_handlers()
  log_path = os.path.join(log_dir, 'tff_worker.log') if log_dir else None
  worker = LocalWorker(log_path=log_path)
  try:
    channel = grpc.insecure_channel(worker.target, GRPC_CHANNEL_OPTIONS)
    stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
    wait_ready(stub, worker, worker.target)
    context = make_context(stub, worker, worker.target)
    with context_stack_impl.context_stack.install(context):
      yield worker
  finally:
    worker.stop()
    # TFF's import-time default context would lazily start an unmanaged
    # worker; make a computation invoked outside a managed block fail loudly.
    context_stack_impl.context_stack.set_default_context(closed_context())


def closed_context():
  """A default context that refuses to execute (no unmanaged workers)."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_base
  # pylint: enable=g-import-not-at-top

  class _Closed(context_base.SyncContext):

    def invoke(self, comp, arg):
      raise errors.RuntimeError_(
          'TFF computations must run inside tff_compress.runtime.local.'
          'local_context() (which owns the worker process) or '
          'runtime.remote.remote_context()')

  return _Closed()
