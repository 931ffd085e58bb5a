"""One federated training run: config -> settings -> algorithm -> run directory.

Library code: no flags. `simulate.py` parses flags and calls :func:`run`.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, TextIO

import ml_collections

from tff_compress import config_lib
from tff_compress.data import federated_data
from tff_compress.data import registry as data_registry
from tff_compress.fedavg import algorithm as fedavg_algorithm
from tff_compress.gkt import algorithm as gkt_algorithm
from tff_compress.program import algorithm as algorithm_lib
from tff_compress.program import loop
from tff_compress.program import run_dir as run_dir_lib
from tff_compress.program import settings as program_settings

# Config `algorithm` -> (settings, data) -> the program-loop adapter.
ALGORITHMS: dict[str, Callable[..., algorithm_lib.Algorithm]] = {
    'fedavg': fedavg_algorithm.build,
    'fedavg_bn': gkt_algorithm.build_fedavg_bn,
    'fedgkt': gkt_algorithm.build_fedgkt,
}
assert set(ALGORITHMS) == set(program_settings.ALGORITHMS), (
    'program.settings.ALGORITHMS and simulate_lib.ALGORITHMS differ')


def build_algorithm(config: ml_collections.ConfigDict
                    ) -> algorithm_lib.Algorithm:
  """The algorithm adapter of a validated config (loads its data)."""
  settings = config_lib.settings(config)
  data: federated_data.FederatedData = data_registry.build_federated_data(
      settings.data, seed=settings.run.seed)
  return ALGORITHMS[settings.run.algorithm](settings, data)


def run(
    config: ml_collections.ConfigDict,
    run_dir: str,
    out: TextIO = sys.stdout,
    after_round: Optional[Callable[[int], None]] = None,
) -> dict:
  """Trains per `config`, writing/resuming `run_dir`; returns the summary.

  Args:
    config: A validated config (see `config_lib`).
    run_dir: Run directory; created, or resumed if it holds this config.
    out: Where progress lines go.
    after_round: Called with the round number after its checkpoint is saved
      (tests use it to interrupt a run).

  Raises:
    run_dir_lib.RunDirError: `run_dir` is not a directory or holds another
      config's run (checked before any data is loaded).
    federated_data.DataError: The data cannot be loaded.
  """
  directory = run_dir_lib.RunDir(
      run_dir, config_lib.identity(config),
      title=f'{config.name}: {config.algorithm} {config.model.name} on '
      f'{config.data.name}')
  algorithm = build_algorithm(config)
  return loop.run(algorithm, config_lib.settings(config).run, directory,
                  out=out, after_round=after_round)
