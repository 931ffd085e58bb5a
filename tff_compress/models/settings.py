"""The `model.*` config section."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s


@dataclasses.dataclass(frozen=True)
class ModelSettings(s.Section):
  """The network every client trains (FedGKT: the server's large one)."""

  SECTION = 'model'

  name: str = s.field(
      'caldas_cnn', s.registry_choice('tff_compress.models.registry',
                                      'MODELS'),
      'caldas_cnn (1.66 M params on MNIST), dense (small, for tests), '
      'logistic (multinomial logistic regression, the synthetic data\'s '
      'model), resnet8/20/56/110 (batch norm; fedgkt / fedavg_bn)')
