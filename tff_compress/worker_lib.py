"""A remote TFF worker for multi-machine simulation, and its health check.

The worker is TFF's own C++ executor service (`worker_binary` from the
tensorflow_federated wheel), supervised by this process:

* it serves on ``--port`` on all interfaces, with ``--data_dir`` as its
  working directory: the client-data stores of the runs it serves live in
  ``<data_dir>/client_data/`` (see `tff_compress.data.store`);
* it dies with this process (``PR_SET_PDEATHSIG``), and SIGTERM / SIGINT stop
  it cleanly (exit status 0);
* it is reported ready only once it answers gRPC.

Library code: no flags. `worker.py` is the binary.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
import threading
import time
from typing import Optional, Sequence, TextIO

from tff_compress.data import settings as data_settings
from tff_compress.runtime import errors as runtime_errors
from tff_compress.runtime import local as local_runtime


class WorkerError(RuntimeError):
  """The worker cannot start or a checked worker is unhealthy (one line)."""


def check_port_free(port: int) -> None:
  """Raises WorkerError if `port` is taken on any interface.

  gRPC servers bind with SO_REUSEPORT, so a second worker on a taken port
  would silently share it; binding a socket without it first detects that.
  (SO_REUSEADDR only lets a restarted worker reuse its port while the old
  connections linger in TIME_WAIT.)
  """
  if not 1 <= port <= 65535:
    raise WorkerError(f'--port={port} is not in 1..65535')
  for family, host in ((socket.AF_INET6, '::'), (socket.AF_INET, '0.0.0.0')):
    try:
      sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this host
      continue
    try:
      sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      sock.bind((host, port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise WorkerError(f'port {port} is already in use') from e
      if e.errno != errno.EADDRNOTAVAIL:
        raise WorkerError(f'cannot bind port {port}: {e.strerror}') from e
    finally:
      sock.close()


def prepare_data(data: data_settings.DataSettings, seed: int, data_dir: str,
                 out: TextIO = sys.stdout) -> str:
  """Writes the client-data store of a run's data under `data_dir`.

  Args:
    data: The run's `data.*` settings.
    seed: The run's config seed (it determines the clients).
    data_dir: The worker's data directory.
    out: Where the one progress line goes.

  Returns:
    The store directory.
  """
  # pylint: disable=g-import-not-at-top
  from tff_compress.data import registry as data_registry
  from tff_compress.data import store as store_lib
  # pylint: enable=g-import-not-at-top
  federated = data_registry.build_federated_data(data, seed=seed)
  store = store_lib.prepare_store(federated, data_dir)
  print(f'client data of {federated.name} ({store.num_clients} clients, '
        f'{store.num_test} test examples): {store.path}', file=out,
        flush=True)
  return store.path


def serve(
    port: int,
    data_dir: str,
    max_concurrent_computation_calls: int = -1,
    out: TextIO = sys.stdout,
    stop: Optional[threading.Event] = None,
) -> int:
  """Runs TFF's worker on `port` until SIGTERM/SIGINT (or `stop` is set).

  Args:
    port: TCP port, served on all interfaces.
    data_dir: The worker's working directory (must exist).
    max_concurrent_computation_calls: Limit on parallel calls of one
      computation inside the worker (<= 0: none).
    out: Where the ready / stopped lines go.
    stop: Optional event that stops the worker when set (tests; the binary
      uses the signals).

  Returns:
    Exit status: 0 after a requested stop, 1 if the worker died by itself.

  Raises:
    WorkerError: The port is taken or the worker did not become ready.
  """
  check_port_free(port)
  stop = stop or threading.Event()
  if threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, lambda *_: stop.set())
  worker = local_runtime.LocalWorker(
      port=port, cwd=data_dir, inherit_output=True,
      max_concurrent_computation_calls=max_concurrent_computation_calls)
  try:
    try:
      local_runtime.wait_serving(worker)
    except runtime_errors.WorkerStartError as e:
      raise WorkerError(str(e).splitlines()[0]) from e
    print(f'TFF worker serving on port {port} (pid {worker.pid}); '
          f'data dir {data_dir}', file=out, flush=True)
    while not stop.is_set():
      if not worker.alive():
        print(f'TFF worker on port {port} exited with code '
              f'{worker.process.poll()}', file=out, flush=True)
        return 1
      stop.wait(0.2)
    print(f'TFF worker on port {port} stopped', file=out, flush=True)
    return 0
  finally:
    worker.stop()


def check(targets: Sequence[str], timeout: float,
          data: Optional[data_settings.DataSettings] = None, seed: int = 0,
          data_dir: str = '', out: TextIO = sys.stdout) -> None:
  """Health check: every worker runs a computation (and reads the run's data).

  Args:
    targets: ``host:port`` of each worker.
    timeout: Seconds to wait for each connection.
    data: Optional `data.*` settings of a run: also check that every worker
      can read its client-data store (prepared under `data_dir` here first).
    seed: The run's config seed (with `data`).
    data_dir: Where this process prepares the store (`data` only).
    out: Where one ``ok host:port`` line per worker goes.

  Raises:
    WorkerError: A worker is unreachable, fails the computation or lacks
      the data; the message names it.
  """
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow_federated as tff
  from tff_compress.data import registry as data_registry
  from tff_compress.data import store as store_lib
  from tff_compress.runtime import feed
  from tff_compress.runtime import remote
  # pylint: enable=g-import-not-at-top
  store = None
  if data is not None:
    store = store_lib.prepare_store(
        data_registry.build_federated_data(data, seed=seed), data_dir)

  @tff.tensorflow.computation(np.int32)
  def add_one(x):
    return x + 1

  t0 = time.monotonic()
  try:
    with remote.remote_context(list(targets),
                               connect_timeout=timeout) as cluster:
      for worker in cluster.workers:
        if cluster.run_on(worker, add_one, 41) != 42:
          raise WorkerError(f'TFF worker {worker.target} computed 41 + 1 '
                            'wrongly')
      if store is not None:
        feed.check_workers(cluster, store)
  except (runtime_errors.RuntimeError_, store_lib.StoreError) as e:
    raise WorkerError(str(e)) from e
  for target in targets:
    print(f'ok {target}' + (f' (client data {store.relative_dir})'
                            if store else ''), file=out, flush=True)
  print(f'{len(targets)} worker(s) healthy in {time.monotonic() - t0:.1f} s',
        file=out, flush=True)
