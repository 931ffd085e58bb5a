"""What cohort execution (`runtime.cohort_size` > 1) can run, as config rules.

A cohort runs its clients' local training as one batched computation and
their aggregator stages itself (`cohorts/client_work.py`), so it covers
what it re-implements in batched form and nothing more. Everything else is
refused here with the key that conflicts, rather than run differently.
"""

from __future__ import annotations

from typing import Optional


def problem(config) -> Optional[tuple[str, str]]:
  """(key, message) of the first setting cohorts cannot run, or None.

  Args:
    config: The full config (`runtime.cohort_size` > 1).
  """
  size = config.runtime.cohort_size
  k = config.clients_per_round
  if config.algorithm != 'fedavg':
    return ('runtime.cohort_size', f'is {size} with algorithm='
            f'{config.algorithm!r}; cohorts run algorithm=fedavg only')
  if k % size:
    return ('runtime.cohort_size', f'is {size}, which does not divide '
            f'clients_per_round={k}; every cohort holds the same number of '
            'clients')
  # pylint: disable=g-import-not-at-top  (section classes import these)
  from tff_compress.faults import settings as fault_settings
  from tff_compress.pruning import settings as pruning_settings
  from tff_compress.tiers import settings as tier_settings
  # pylint: enable=g-import-not-at-top
  dp = config.dp
  conflicts = (
      ('client.work', config.client.work != 'sgd',
       'cohorts train with local SGD, client.work=sgd'),
      ('dp.mode', dp.mode == 'sample',
       'DP-SGD clips per example inside local training'),
      ('dp.adaptive', dp.mode == 'user' and dp.adaptive,
       'the adaptive clip is a per-client quantile estimate; use a fixed '
       'dp.clip'),
      ('secagg.enabled', config.secagg.enabled,
       'the secure sum is per client'),
      ('faults.*', fault_settings.FaultSettings.from_config(
          config.faults).active,
       'client faults pick clients one by one'),
      ('tiers.*', tier_settings.TierSettings.from_config(
          config.tiers).active, 'device tiers train per-tier models'),
      ('pruning.*', pruning_settings.PruningSettings.from_config(
          config.pruning).active, 'pruning phases change the client model'),
  )
  for key, conflict, why in conflicts:
    if conflict:
      return ('runtime.cohort_size', f'is {size} with {key} set: cohort '
              f'execution cannot run it ({why}); use runtime.cohort_size=1')
  # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
  from tff_compress.cohorts import batched_model
  from tff_compress.models import registry as model_registry
  # pylint: enable=g-import-not-at-top
  # Layer kinds do not depend on the input shape or the number of classes.
  try:
    batched_model.check(model_registry.build_model(
        config.model.name, (28, 28, 1), 10))
  except batched_model.CohortError as e:
    return ('runtime.cohort_size', f'is {size} with model.name='
            f'{config.model.name!r}: {e}')
  return None
