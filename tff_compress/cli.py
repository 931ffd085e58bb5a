"""Shared command-line plumbing for the binaries: config flag, clean errors.

User mistakes (bad config keys/values, unusable run dirs, missing data) end
with one line on stderr naming what is wrong and exit status 2 — never a
traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

# Quiet TensorFlow's C++ start-up banner unless the user asked otherwise.
# (Level 3: TF 2.14 logs harmless CUDA-plugin "errors" at import on CPU.)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# TensorFlow must be imported before absl parses flags: imported after
# `app.run` has parsed them, Keras 2.14 cannot build any model (its layers
# see eager mode while tracing and fail on the unknown batch dimension).
import tensorflow as tf  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position

USAGE_EXIT = 2


class UserError(Exception):
  """A mistake the user can fix; printed as one line, exit status 2."""


def fail(program: str, message: str) -> None:
  print(f'{program}: error: {message}', file=sys.stderr, flush=True)
  sys.exit(USAGE_EXIT)


def _resolve_config_path(program: str, argv: Sequence[str]) -> list[str]:
  """`bazel run` starts in the runfiles tree; configs are user paths.

  Rewrites `--config=relative/path.py` to the existing file it names (see
  `run_dir.find_input_file`); a missing file is a one-line error.
  """
  # pylint: disable=g-import-not-at-top
  from tff_compress.program import run_dir as run_dir_lib
  # pylint: enable=g-import-not-at-top
  out = []
  for arg in argv:
    if arg.startswith('--config=') and not arg.startswith('--config.'):
      path = arg[len('--config='):]
      spec, colon, rest = path.partition(':')
      spec = run_dir_lib.find_input_file(spec)
      if not os.path.isfile(spec):
        fail(program, f'config file not found: {path}')
      arg = f'--config={spec}{colon}{rest}'
    out.append(arg)
  return out


def load_config(config_flag, validate=None):
  """The parsed config, validated; load/validation problems -> UserError.

  Args:
    config_flag: The `--config` flag holder.
    validate: Validation function (default: the simulation config's).
  """
  from tff_compress import config_lib  # pylint: disable=g-import-not-at-top
  validate = validate or config_lib.validate
  try:
    config = config_flag.value
    return validate(config)
  except config_lib.ConfigError as e:
    raise UserError(str(e)) from e
  except (OSError, SyntaxError, ImportError, AttributeError, NameError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f'cannot load --config: {first}') from e


def define_config_flag(default_config_path: str):
  return config_flags.DEFINE_config_file(
      'config', default_config_path,
      'Config file (configs/NAME.py); override keys with --config.KEY=VALUE.',
      lock_config=True)


def define_workers_flag():
  return flags.DEFINE_string(
      'workers', None,
      'host:port,... of remote TFF workers (./bazelw run '
      '//tff_compress:worker -- --port=N) that run the clients; overrides '
      'the config key runtime.workers. Not part of the run identity.')


def with_workers(config, workers):
  """`config` with runtime.workers = `workers` (unless None), re-validated."""
  if workers is None:
    return config
  from tff_compress import config_lib  # pylint: disable=g-import-not-at-top
  config.runtime.workers = workers
  try:
    return config_lib.validate(config)
  except config_lib.ConfigError as e:
    raise UserError(str(e)) from e


def run_main(program: str, main: Callable[[Sequence[str]], None],
             check_simulation_keys: bool = True) -> None:
  """`app.run` with flag and config errors reported as one line, exit 2."""

  def parse(argv):
    argv = _resolve_config_path(program, argv)
    if check_simulation_keys:
      _check_override_keys(program, argv)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(program, _one_line(e))
    except KeyError as e:
      fail(program, f'unknown config key {_one_line(e)}')
    except (AttributeError, TypeError, ValueError, OSError, SyntaxError,
            ImportError) as e:
      fail(program, f'bad --config: {_one_line(e)}')

  def guarded(argv):
    # Library INFO chatter (Keras metric notes, SavedModel asset lines)
    # would drown the one progress line per round.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel('ERROR')
    try:
      main(argv)
    except UserError as e:
      fail(program, _one_line(e))

  app.run(guarded, flags_parser=parse)


def _check_override_keys(program: str, argv: Sequence[str]) -> None:
  """`--config.KEY=V` with an unknown KEY -> one line naming it."""
  from tff_compress import config_lib  # pylint: disable=g-import-not-at-top
  known = config_lib.flatten(config_lib.default_config())
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      key = arg[len('--config.'):].split('=', 1)[0]
      if key not in known:
        close = [k for k in known if k.split('.')[-1] == key.split('.')[-1]]
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        fail(program, f'unknown config key {key!r}{hint}; keys are listed '
             'in README.md and in each package\'s settings.py')


_TRACE = 'Error whilst parsing config file:'


def _one_line(e: BaseException) -> str:
  """The error as one line. A config file's own ValueError/TypeError comes
  back from ml_collections with its traceback pasted in: keep its message."""
  text = str(e).strip()
  if _TRACE in text:
    head = text.split(_TRACE, 1)[0].strip()
    last = text.strip().splitlines()[-1].strip()
    message = last.split(': ', 1)[1] if ': ' in last else last
    text = f'{head} {message}' if head else message
  text = text.replace('\n', ' ')
  return text or type(e).__name__
