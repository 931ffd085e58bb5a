"""Remote TFF workers: `worker_binary`s started elsewhere (`tff_compress.worker`).

TFF 0.87's pip wheel has no C++ remote/composing executor bindings (no
`cpp_execution_contexts.create_sync_remote_cpp_execution_context`); its
in-wheel way to spread clients over several executor services is the
`MergeableCompExecutionContext`: a computation is compiled into
up-to-merge / merge / after-merge parts, each worker runs the up-to-merge
part (broadcast, client work, partial aggregation) on its share of the
clients, and the partial aggregates are merged pairwise on a worker.
:func:`remote_context` names any worker that is unreachable at start or lost
during a computation (`errors.WorkerUnavailableError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Iterator, Optional

import grpc

from tff_compress.runtime import errors
from tff_compress.runtime import local
from tff_compress.runtime import settings

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
            local.without_secure_sums(comp))

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
    except errors.WorkerUnavailableError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      problem = self._diagnose(involved, marks, e)
      if problem is None:
        raise
      raise problem from e

  def _diagnose(self, involved, marks, error) -> Optional[errors.RuntimeError_]:
    for worker, mark in zip(self.workers, marks):
      failures = worker.meter.failures[mark:]
      lost = [f for f in failures if f[0] in _LOST_CODES]
      if not lost and worker in involved and not worker.stub.is_ready:
        lost = [('UNAVAILABLE', 'connection closed')]
      if lost:
        code, details = lost[0]
        if code == 'DEADLINE_EXCEEDED':
          return errors.WorkerLostError(
              f'TFF worker {worker.target} did not answer within the RPC '
              f'deadline of {worker.meter.timeout:g} s (runtime.rpc_timeout)')
        return errors.WorkerLostError(
            f'lost TFF worker {worker.target} ({code}: '
            f'{details.splitlines()[0] if details else "no details"})')
      if failures:
        code, details = failures[0]
        first = details.strip().splitlines()[0] if details.strip() else code
        return errors.RuntimeError_(f'TFF worker {worker.target} failed: {first}')
    if isinstance(error, errors.WorkerDiedError):
      return errors.WorkerLostError(str(error).replace('TFF worker at', 'lost TFF worker'))
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
      target, local.GRPC_CHANNEL_OPTIONS + _KEEPALIVE_OPTIONS)
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
    targets: ``host:port`` of each worker (see `settings.parse_workers`).
    connect_timeout: Seconds to wait for every worker's gRPC channel to
      become ready before failing.
    rpc_timeout: Deadline of each gRPC call in seconds (0: none). A call
      that computes a value lasts as long as the worker's share of the
      round, so this must exceed the longest one.

  Yields:
    The :class:`Cluster`, installed as TFF's context.

  Raises:
    errors.WorkerUnavailableError: A worker is unreachable at start (the
      message lists every such ``host:port``) or is lost during a
      computation.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
  # pylint: enable=g-import-not-at-top
  if not targets:
    raise settings.WorkerAddressError('no remote workers given')
  connections = [_connect(t, rpc_timeout) for t in targets]
  try:
    deadline = time.monotonic() + connect_timeout
    while True:
      waiting = [t for t, (_, stub, _) in zip(targets, connections)
                 if not stub.is_ready]
      if not waiting:
        break
      if time.monotonic() > deadline:
        raise errors.WorkerUnavailableError(
            f'TFF worker{"s" if len(waiting) > 1 else ""} '
            f'{", ".join(waiting)} not reachable within {connect_timeout:g} s'
            ' (start one with: ./bazelw run //tff_compress:worker -- '
            '--port=PORT)')
      time.sleep(0.1)
    workers = [
        RemoteWorker(t, channel, stub, meter,
                     local.make_context(stub, None, t),
                     local.make_context(stub, None, t, asynchronous=True))
        for t, (channel, stub, meter) in zip(targets, connections)]
    cluster = Cluster(workers)
    with context_stack_impl.context_stack.install(_cluster_context(cluster)):
      yield cluster
  finally:
    for channel, _, _ in connections:
      channel.close()
    context_stack_impl.context_stack.set_default_context(local.closed_context())
