"""CIFAR-10 / CIFAR-100 from a local cache in the original python format.

The cache holds the extracted archives of https://www.cs.toronto.edu/~kriz/
exactly as Keras keeps them (``~/.keras/datasets`` by default)::

  <cache_dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch
  <cache_dir>/cifar-100-python/train, test

Every file is a pickled dict (written by Python 2, so keys are bytes when read
with ``encoding='bytes'``) with ``b'data'``: uint8 ``[N, 3072]``, each row one
32x32 image stored channel-first (1024 red, then 1024 green, then 1024 blue
values, each plane row-major), and the labels as a list of N ints under
``b'labels'`` (CIFAR-10, 0..9) or ``b'fine_labels'`` (CIFAR-100, 0..99).

Nothing is downloaded. Only numpy arrays and plain Python containers are
unpickled: any other object in a file is refused instead of being executed.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any

import numpy as np

from tff_compress.data import federated_data

DataError = federated_data.DataError
DataNotFoundError = federated_data.DataNotFoundError

INPUT_SHAPE = (32, 32, 3)
_ROW_LENGTH = 32 * 32 * 3


@dataclasses.dataclass(frozen=True)
class _Layout:
  directory: str
  train_files: tuple[str, ...]
  test_files: tuple[str, ...]
  label_key: str
  archive_url: str


_LAYOUTS = {
    10: _Layout(
        directory='cifar-10-batches-py',
        train_files=tuple(f'data_batch_{i}' for i in range(1, 6)),
        test_files=('test_batch',),
        label_key='labels',
        archive_url='https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
    ),
    100: _Layout(
        directory='cifar-100-python',
        train_files=('train',),
        test_files=('test',),
        label_key='fine_labels',
        archive_url='https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
    ),
}

# The globals a pickled numpy array refers to (protocols 0-5, numpy 1.x), and
# the py3 protocol-2 encoding of bytes. Nothing else may be constructed.
_ALLOWED_GLOBALS = frozenset([
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('_codecs', 'encode'),
])


def default_cache_dir() -> str:
  """Keras' dataset cache, ``~/.keras/datasets``."""
  return os.path.join(os.path.expanduser('~'), '.keras', 'datasets')


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays and builtins only."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(
          f'refusing to load {module}.{name} (only numpy arrays are allowed)')
    return super().find_class(module, name)


def _read_batch(path: str, label_key: str,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """One batch file -> (uint8 [n, 3072] rows, int32 [n] labels)."""
  try:
    with open(path, 'rb') as f:
      content = _ArrayUnpickler(f, encoding='bytes').load()
  except OSError as e:
    raise DataError(f'cannot read CIFAR file {path}: {e}') from e
  except Exception as e:  # pylint: disable=broad-except
    # Unpickling damaged bytes can raise nearly any exception type.
    raise DataError(
        f'CIFAR file {path} is not a valid python-format CIFAR batch '
        f'({type(e).__name__}: {e})') from e
  if not isinstance(content, dict):
    raise DataError(f'CIFAR file {path} holds a {type(content).__name__}, '
                    'expected a dict')
  content = {k.decode('latin1') if isinstance(k, bytes) else k: v
             for k, v in content.items()}
  missing = [k for k in ('data', label_key) if k not in content]
  if missing:
    raise DataError(
        f'CIFAR file {path} lacks the keys {missing} (has '
        f'{sorted(map(str, content))}); is it a CIFAR-{num_classes} file?')
  try:
    data = np.asarray(content['data'])
    labels = np.asarray(content[label_key])
  except (TypeError, ValueError) as e:
    raise DataError(f'CIFAR file {path}: unreadable arrays ({e})') from e
  if (data.ndim != 2 or data.shape[1] != _ROW_LENGTH or
      not np.issubdtype(data.dtype, np.integer)):
    raise DataError(
        f'CIFAR file {path}: data has shape {data.shape} and dtype '
        f'{data.dtype}; expected uint8 [N, {_ROW_LENGTH}]')
  if data.size and (data.min() < 0 or data.max() > 255):
    raise DataError(f'CIFAR file {path}: pixel values outside 0..255')
  if (labels.shape != (len(data),) or
      not np.issubdtype(labels.dtype, np.integer)):
    raise DataError(
        f'CIFAR file {path}: {label_key!r} has shape {labels.shape} and '
        f'dtype {labels.dtype}; expected {len(data)} integer labels')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(
        f'CIFAR file {path}: labels outside 0..{num_classes - 1}')
  return data.astype(np.uint8), labels.astype(np.int32)


def _to_images(rows: np.ndarray) -> np.ndarray:
  """uint8 [n, 3072] channel-first rows -> float32 [n, 32, 32, 3] in [0, 1]."""
  images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images.astype(np.float32) / np.float32(255.0)


def expected_files(cache_dir: str, num_classes: int) -> list[str]:
  """Every file :func:`load_cifar_arrays` reads, as absolute paths."""
  layout = _layout(num_classes)
  root = os.path.join(_resolve(cache_dir), layout.directory)
  return [os.path.join(root, name)
          for name in layout.train_files + layout.test_files]


def _layout(num_classes: int) -> _Layout:
  if num_classes not in _LAYOUTS:
    raise DataError(
        f'CIFAR num_classes={num_classes!r} is not one of {sorted(_LAYOUTS)}')
  return _LAYOUTS[num_classes]


def _resolve(cache_dir: str) -> str:
  return os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))


def load_cifar_arrays(
    cache_dir: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Loads the CIFAR-10 or CIFAR-100 train and test splits from the cache.

  Args:
    cache_dir: Directory that contains ``cifar-10-batches-py/`` or
      ``cifar-100-python/``; empty means Keras' ``~/.keras/datasets``.
    num_classes: 10 (CIFAR-10, ``labels``) or 100 (CIFAR-100,
      ``fine_labels``).

  Returns:
    ``(x_train, y_train, x_test, y_test)``: images float32
    ``[n, 32, 32, 3]`` (height, width, RGB) with values pixel / 255 in
    [0, 1]; labels int32 ``[n]``. Train files are concatenated in order
    (CIFAR-10: 50,000 = 5 x 10,000; CIFAR-100: 50,000), test 10,000.

  Raises:
    DataNotFoundError: A file is missing; the message lists all missing
      paths and where to get them.
    DataError: `num_classes` is not 10 or 100, or a file is corrupt (not a
      pickle, wrong keys, shapes or label range) or a split is empty.
  """
  layout = _layout(num_classes)
  paths = expected_files(cache_dir, num_classes)
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    root = os.path.dirname(paths[0])
    archive = os.path.basename(layout.archive_url)
    raise DataNotFoundError(
        f'CIFAR-{num_classes} cache files missing: {", ".join(missing)}. '
        f'Download {layout.archive_url} and extract it with '
        f'`tar xzf {archive} -C {os.path.dirname(root)}` '
        f'(data.cache_dir={cache_dir!r})')
  n_train = len(layout.train_files)
  splits = []
  for names in (paths[:n_train], paths[n_train:]):
    batches = [_read_batch(p, layout.label_key, num_classes) for p in names]
    rows = np.concatenate([b[0] for b in batches])
    if len(rows) == 0:  # pylint: disable=g-explicit-length-test
      raise DataError(f'CIFAR-{num_classes}: no examples in {names}')
    splits.append((_to_images(rows),
                   np.concatenate([b[1] for b in batches])))
  (x_train, y_train), (x_test, y_test) = splits
  return x_train, y_train, x_test, y_test
