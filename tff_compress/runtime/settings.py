"""The `runtime.*` config section: where a run executes, not what it computes.

Excluded from the run's identity (`config_lib.identity`), so a run may
resume on other workers.
"""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s


class WorkerAddressError(ValueError):
  """A `host:port,...` worker list is malformed."""


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


def _workers(v, c):
  if not isinstance(v, str):
    return f'must be a string, got {v!r}'
  try:
    parse_workers(v)
  except WorkerAddressError as e:
    return f'is {v!r}: {e}; allowed: host:port,host:port'
  if v.strip() and c.algorithm == 'fedgkt':
    return 'applies to algorithm fedavg/fedavg_bn only; leave it empty'
  return None


@dataclasses.dataclass(frozen=True)
class RuntimeSettings(s.Section):
  """Remote TFF workers (or one private local worker) and their timeouts."""

  SECTION = 'runtime'

  workers: str = s.field(
      '', _workers,
      "host:port,... of remote TFF workers (tff_compress.worker); '' = one "
      'private local worker')
  worker_data_dir: str = s.field(
      '', s.string,
      "where the driver writes the client data the workers read ('' = "
      '~/.cache/tff_compress/worker, the workers\' default --data_dir)')
  connect_timeout: float = s.field(
      30.0, s.float_range(0.0, lo_open=True),
      'seconds to reach every worker at start')
  rpc_timeout: float = s.field(
      0.0, s.float_range(0.0), 'deadline of each gRPC call (0 = none)')
  cohort_size: int = s.field(
      1, s.int_range(1),
      'G simulated clients per TFF client, trained as one batched '
      'computation (cohorts/); 1 = one TFF client per client. Results equal '
      'per-client execution to float tolerance', added=True)

  @classmethod
  def check(cls, config) -> None:
    """Cohorts run what they re-implement in batched form only."""
    if config.runtime.cohort_size == 1:
      return
    # pylint: disable=g-import-not-at-top  (model check needs TensorFlow)
    from tff_compress.cohorts import settings as cohort_settings
    # pylint: enable=g-import-not-at-top
    found = cohort_settings.problem(config)
    if found:
      raise s.problem(*found)

  @property
  def targets(self) -> list[str]:
    return parse_workers(self.workers)
