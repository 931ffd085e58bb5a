"""The one place that sets TFF's execution context and owns its worker process.

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

:func:`remote_context` instead connects to workers started elsewhere
(``tff_compress.worker``, one per host:port) and spreads the clients of each
computation over them; it names any worker that is unreachable at start or
lost during a computation (:class:`WorkerUnavailableError`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import tempfile
import threading
import time
from typing import Iterator, Optional

import grpc
import portpicker

_PR_SET_PDEATHSIG = 1
_READY_TIMEOUT_S = 60.0
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
GRPC_CHANNEL_OPTIONS = (
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
)


class RuntimeError_(RuntimeError):
  """Base class for execution-runtime failures."""


class WorkerStartError(RuntimeError_):
  """The TFF worker could not be started or did not become ready."""


class WorkerDiedError(RuntimeError_):
  """A TFF worker this process depends on has died."""


def worker_binary_path() -> str:
  """Path of the C++ worker shipped inside the tensorflow_federated wheel."""
  import tensorflow_federated  # pylint: disable=g-import-not-at-top

  path = os.path.join(
      os.path.dirname(tensorflow_federated.__file__), 'data', 'worker_binary'
  )
  if not os.path.isfile(path):
    raise WorkerStartError(f'TFF worker binary not found at {path}')
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


def _wait_ready(stub, worker: Optional[LocalWorker], target: str) -> None:
  deadline = time.monotonic() + _READY_TIMEOUT_S
  while not stub.is_ready:
    if worker is not None and not worker.alive():
      raise WorkerStartError(worker.describe_death())
    if time.monotonic() > deadline:
      raise WorkerStartError(
          f'TFF worker at {target} not ready after {_READY_TIMEOUT_S:.0f}s'
      )
    time.sleep(0.1)


def _without_secure_sums(comp):
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
    WorkerStartError: It exited, or was not ready within 60 s.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
  # pylint: enable=g-import-not-at-top
  channel = grpc.insecure_channel(worker.target, GRPC_CHANNEL_OPTIONS)
  try:
    _wait_ready(remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel),
                worker, worker.target)
  finally:
    channel.close()


def _make_context(stub, worker: Optional[LocalWorker], target: str,
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
      raise WorkerDiedError(worker.describe_death())
    if not stub.is_ready:
      raise WorkerDiedError(f'TFF worker at {target} is not reachable')
    cardinalities.setdefault(placements.CLIENTS, 0)
    executor = remote_executor.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  factory = python_executor_stacks.ResourceManagingExecutorFactory(
      executor_stack_fn=stack_fn
  )

  def compile_fn(comp):
    return compiler.desugar_and_transform_to_native(_without_secure_sums(comp))

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
    _wait_ready(stub, worker, worker.target)
    context = _make_context(stub, worker, worker.target)
    with context_stack_impl.context_stack.install(context):
      yield worker
  finally:
    worker.stop()
    # TFF's import-time default context would lazily start an unmanaged
    # worker; make a computation invoked outside a managed block fail loudly.
    context_stack_impl.context_stack.set_default_context(_closed_context())


def _closed_context():
  """A default context that refuses to execute (no unmanaged workers)."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_base
  # pylint: enable=g-import-not-at-top

  class _Closed(context_base.SyncContext):

    def invoke(self, comp, arg):
      raise RuntimeError_(
          'TFF computations must run inside tff_compress.runtime.'
          'local_context() (which owns the worker process) or '
          'remote_context()')

  return _Closed()


# ---------------------------------------------------------------------------
# Remote workers: `worker_binary`s started elsewhere (`tff_compress.worker`).
#
# TFF 0.87's pip wheel has no C++ remote/composing executor bindings (no
# `cpp_execution_contexts.create_sync_remote_cpp_execution_context`); its
# in-wheel way to spread clients over several executor services is the
# `MergeableCompExecutionContext`: a computation is compiled into
# up-to-merge / merge / after-merge parts, each worker runs the up-to-merge
# part (broadcast, client work, partial aggregation) on its share of the
# clients, and the partial aggregates are merged pairwise on a worker.

CONNECT_TIMEOUT_S = 30.0
# HTTP/2 keepalive: a host that vanishes without closing its TCP connections
# (power loss, partition) is detected within ~6.3 min. Servers refuse pings
# more often than every 5 min by default (GOAWAY "too_many_pings").
_KEEPALIVE_OPTIONS = (
    ('grpc.keepalive_time_ms', 360_000),
    ('grpc.keepalive_timeout_ms', 20_000),
    ('grpc.http2.max_pings_without_data', 0),
)
_LOST_CODES = frozenset({'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'CANCELLED'})


class WorkerAddressError(ValueError):
  """A `host:port,...` worker list is malformed."""


class WorkerUnavailableError(RuntimeError_):
  """A remote worker cannot be reached, at start or during a computation."""


class WorkerLostError(WorkerUnavailableError):
  """A remote worker died or stopped answering during a computation."""


def parse_workers(spec: str) -> list[str]:
  """Splits ``'host:port,host:port'`` into checked ``host:port`` targets.

  Args:
    spec: Comma-separated targets; ``''`` means no remote workers. IPv6
      hosts go in brackets (``[::1]:8000``).

  Returns:
    The targets in order (empty for ``''``).

  Raises:
    WorkerAddressError: An entry has no host, a port outside 1..65535, or
      appears twice.
  """
  targets = []
  for raw in spec.split(',') if spec.strip() else []:
    entry = raw.strip()
    host, colon, port = entry.rpartition(':')
    if not colon or not host or host == '[]':
      raise WorkerAddressError(
          f'worker {entry!r} is not host:port (e.g. 10.0.0.2:8000)')
    if not port.isdigit() or not 1 <= int(port) <= 65535:
      raise WorkerAddressError(
          f'worker {entry!r}: port {port!r} is not in 1..65535')
    if entry in targets:
      raise WorkerAddressError(f'worker {entry!r} is listed twice')
    targets.append(entry)
  return targets


class _CallDetails(grpc.ClientCallDetails):

  def __init__(self, details, timeout):
    self.method = details.method
    self.timeout = timeout
    self.metadata = details.metadata
    self.credentials = details.credentials
    self.wait_for_ready = getattr(details, 'wait_for_ready', None)
    self.compression = getattr(details, 'compression', None)


class _Meter(grpc.UnaryUnaryClientInterceptor):
  """Counts the serialized request/response bytes of one worker's gRPC calls
  (protobuf message sizes, without HTTP/2 framing); applies the deadline."""

  def __init__(self, rpc_timeout: float):
    self.timeout = rpc_timeout if rpc_timeout > 0 else None
    self._lock = threading.Lock()
    self.bytes_sent = 0
    self.bytes_received = 0
    self.calls = 0
    self.failures: list[tuple[str, str]] = []  # (status code name, details)

  def intercept_unary_unary(self, continuation, client_call_details, request):
    with self._lock:
      self.bytes_sent += request.ByteSize()
      self.calls += 1
    if self.timeout is not None:
      client_call_details = _CallDetails(client_call_details, self.timeout)
    outcome = continuation(client_call_details, request)
    error = outcome.exception()
    with self._lock:
      if isinstance(error, grpc.Call):
        self.failures.append((error.code().name, str(error.details())))
      elif error is None:
        self.bytes_received += outcome.result().ByteSize()
    return outcome


@dataclasses.dataclass
class RemoteWorker:
  """One connected worker: its channel, byte meter and contexts."""

  target: str
  channel: object
  stub: object
  meter: _Meter
  context: object  # sync context running whole computations on this worker
  async_context: object  # the same, as a member of the merge pool

  @property
  def bytes_sent(self) -> int:
    """Serialized request bytes sent to this worker so far."""
    return self.meter.bytes_sent

  @property
  def bytes_received(self) -> int:
    """Serialized response bytes received from this worker so far."""
    return self.meter.bytes_received


def _has_client_values(type_spec) -> bool:
  """True if a parameter type carries per-client (CLIENTS, not all-equal) data."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.types import computation_types
  from tensorflow_federated.python.core.impl.types import placements
  from tensorflow_federated.python.core.impl.types import type_analysis
  # pylint: enable=g-import-not-at-top
  if type_spec is None:
    return False
  return type_analysis.contains(
      type_spec, lambda t: isinstance(t, computation_types.FederatedType)
      and t.placement is placements.CLIENTS and not t.all_equal)


class Cluster:
  """Remote workers installed as TFF's context.

  A computation whose argument holds per-client values is split by client:
  worker ``k`` of ``K`` runs the ``k``-th contiguous share (``ceil`` of the
  remaining clients over the remaining workers) through the up-to-merge part
  and the partial aggregates are merged; any other computation (initialize,
  get_model_weights, ...) runs whole on the first worker. With one worker
  every computation runs whole on it, exactly as in `local_context`.

  Aggregates are summed in a different association order than on one
  executor ((a+b)+(c+d) instead of ((a+b)+c)+d), so float results agree with
  a one-worker run to float32 rounding, not bit for bit.
  """

  def __init__(self, workers: list[RemoteWorker]):
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context
    # pylint: enable=g-import-not-at-top
    self.workers = workers
    self._pool = None
    if len(workers) > 1:

      def compile_fn(comp):
        return mergeable_comp_compiler.compile_to_mergeable_comp_form(
            _without_secure_sums(comp))

      self._pool = mergeable_comp_execution_context.MergeableCompExecutionContext(
          [w.async_context for w in workers],
          compiler_fn=compile_fn,
          transform_args=tensorflow_computation.transform_args,
          transform_result=tensorflow_computation.transform_result)

  @property
  def targets(self) -> list[str]:
    return [w.target for w in self.workers]

  def bytes_sent(self) -> int:
    """Serialized request bytes the driver has sent to all workers so far."""
    return sum(w.bytes_sent for w in self.workers)

  def bytes_received(self) -> int:
    """Serialized response bytes the driver has received so far."""
    return sum(w.bytes_received for w in self.workers)

  def invoke(self, comp, arg):
    split = self._pool is not None and arg is not None and _has_client_values(
        comp.type_signature.parameter)
    if not split:
      return self._guarded(self.workers[:1],
                           lambda: self.workers[0].context.invoke(comp, arg))
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.common_libs import structure
    from tensorflow_federated.python.core.impl.types import type_conversions
    # pylint: enable=g-import-not-at-top
    result = self._guarded(self.workers, lambda: self._pool.invoke(comp, arg))
    # The merged result comes back in plain containers; restore the
    # computation's Python classes (e.g. LearningProcessOutput, attrs states).
    return type_conversions.type_to_py_container(
        structure.from_container(result, recursive=True),
        comp.type_signature.result)

  def run_on(self, worker: RemoteWorker, comp, *args):
    """Runs `comp(*args)` whole on `worker` (one of :attr:`workers`)."""
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
    # pylint: enable=g-import-not-at-top
    with context_stack_impl.context_stack.install(worker.context):
      return self._guarded([worker], lambda: comp(*args))

  def _guarded(self, involved: list[RemoteWorker], fn):
    """Runs `fn`; a failure caused by a worker becomes an error naming it."""
    marks = [len(w.meter.failures) for w in self.workers]
    try:
      return fn()
    except WorkerUnavailableError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      problem = self._diagnose(involved, marks, e)
      if problem is None:
        raise
      raise problem from e

  def _diagnose(self, involved, marks, error) -> Optional[RuntimeError_]:
    for worker, mark in zip(self.workers, marks):
      failures = worker.meter.failures[mark:]
      lost = [f for f in failures if f[0] in _LOST_CODES]
      if not lost and worker in involved and not worker.stub.is_ready:
        lost = [('UNAVAILABLE', 'connection closed')]
      if lost:
        code, details = lost[0]
        if code == 'DEADLINE_EXCEEDED':
          return WorkerLostError(
              f'TFF worker {worker.target} did not answer within the RPC '
              f'deadline of {worker.meter.timeout:g} s (runtime.rpc_timeout)')
        return WorkerLostError(
            f'lost TFF worker {worker.target} ({code}: '
            f'{details.splitlines()[0] if details else "no details"})')
      if failures:
        code, details = failures[0]
        first = details.strip().splitlines()[0] if details.strip() else code
        return RuntimeError_(f'TFF worker {worker.target} failed: {first}')
    if isinstance(error, WorkerDiedError):
      return WorkerLostError(str(error).replace('TFF worker at', 'lost TFF worker'))
    return None


def _cluster_context(cluster: Cluster):
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_base
  # pylint: enable=g-import-not-at-top

  class _ClusterContext(context_base.SyncContext):

    def invoke(self, comp, arg):
      return cluster.invoke(comp, arg)

  return _ClusterContext()


def _connect(target: str, rpc_timeout: float) -> tuple:
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
  # pylint: enable=g-import-not-at-top
  meter = _Meter(rpc_timeout)
  channel = grpc.insecure_channel(
      target, GRPC_CHANNEL_OPTIONS + _KEEPALIVE_OPTIONS)
  intercepted = grpc.intercept_channel(channel, meter)
  stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(intercepted)
  return channel, stub, meter


@contextlib.contextmanager
def remote_context(
    targets: list[str],
    connect_timeout: float = CONNECT_TIMEOUT_S,
    rpc_timeout: float = 0.0,
) -> Iterator[Cluster]:
  """Runs TFF computations on already running remote workers for the block.

  Args:
    targets: ``host:port`` of each worker (see :func:`parse_workers`).
    connect_timeout: Seconds to wait for every worker's gRPC channel to
      become ready before failing.
    rpc_timeout: Deadline of each gRPC call in seconds (0: none). A call
      that computes a value lasts as long as the worker's share of the
      round, so this must exceed the longest one.

  Yields:
    The :class:`Cluster`, installed as TFF's context.

  Raises:
    WorkerUnavailableError: A worker is unreachable at start (the message
      lists every such ``host:port``) or is lost during a computation.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
  # pylint: enable=g-import-not-at-top
  if not targets:
    raise WorkerAddressError('no remote workers given')
  connections = [_connect(t, rpc_timeout) for t in targets]
  try:
    deadline = time.monotonic() + connect_timeout
    while True:
      waiting = [t for t, (_, stub, _) in zip(targets, connections)
                 if not stub.is_ready]
      if not waiting:
        break
      if time.monotonic() > deadline:
        raise WorkerUnavailableError(
            f'TFF worker{"s" if len(waiting) > 1 else ""} '
            f'{", ".join(waiting)} not reachable within {connect_timeout:g} s'
            ' (start one with: ./bazelw run //tff_compress:worker -- '
            '--port=PORT)')
      time.sleep(0.1)
    workers = [
        RemoteWorker(t, channel, stub, meter,
                     _make_context(stub, None, t),
                     _make_context(stub, None, t, asynchronous=True))
        for t, (channel, stub, meter) in zip(targets, connections)]
    cluster = Cluster(workers)
    with context_stack_impl.context_stack.install(_cluster_context(cluster)):
      yield cluster
  finally:
    for channel, _, _ in connections:
      channel.close()
    context_stack_impl.context_stack.set_default_context(_closed_context())
