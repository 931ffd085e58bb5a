"""Declaring a config section once: default, validation rule and doc together.

A config section is a frozen dataclass whose fields are made with
:func:`field`; the class is the single declaration of its keys. The
dataclass instance is the *typed settings object* library code receives
(never the whole config)::

  @dataclasses.dataclass(frozen=True)
  class DropoutSettings(settings_lib.Section):
    SECTION = 'dropout'
    keep: float = settings_lib.field(
        1.0, settings_lib.float_range(0.0, 1.0, lo_open=True),
        'fraction p of every hidden layer a client trains')

`config_lib` assembles the sections into the config (defaults), validates a
config against them (each field's rule, then each section's `check` for
combinations with other keys) and turns a validated config into settings
objects (`Section.from_config`).

This module imports nothing heavier than the standard library, so declaring
a section never loads TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable, ClassVar, Optional, Sequence

# A rule maps (value, whole config) to a problem ('must be ...') or None.
Rule = Callable[[Any, Any], Optional[str]]


class ConfigError(ValueError):
  """A config value is missing, of the wrong type or out of range."""


def field(default: Any, rule: Rule, doc: str) -> Any:
  """A config key: its default, its validation rule and one line of doc."""
  return dataclasses.field(default=default,
                           metadata={'rule': rule, 'doc': doc})


class Section:
  """Base of every config section's settings dataclass.

  Subclasses set `SECTION` (the config key of the section; '' for the
  top-level keys) and may override `check` for rules that involve other
  sections.
  """

  SECTION: ClassVar[str] = ''

  @classmethod
  def keys(cls) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))

  @classmethod
  def from_config(cls, section) -> 'Section':
    """The settings object of a validated config section (or the root)."""
    return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls)})

  @classmethod
  def check(cls, config) -> None:
    """Rules across keys/sections; raise `ConfigError` naming the key."""
    del config

  def replace(self, **changes) -> 'Section':
    return dataclasses.replace(self, **changes)


def problem(key: str, message: str) -> ConfigError:
  """`ConfigError("config key 'a.b' <message>")`."""
  return ConfigError(f'config key {key!r} {message}')


# ---- rules -------------------------------------------------------------------


def choice(options: Sequence[Any], note: str = '') -> Rule:
  """One of `options` (strings or ints; a bool is never an int here)."""

  def check(v, _):
    if isinstance(v, bool) and not any(isinstance(o, bool) for o in options):
      return f'is {v!r}; allowed: {", ".join(map(str, options))}{note}'
    if v not in options:
      return f'is {v!r}; allowed: {", ".join(map(str, options))}{note}'
    return None

  return check


def registry_choice(module: str, attribute: str) -> Rule:
  """One of the keys of `module.attribute` (a registry dict), imported when
  a config is validated, not when the section is declared (registries load
  TensorFlow)."""

  def check(v, c):
    options = sorted(getattr(importlib.import_module(module), attribute))
    return choice(options)(v, c)

  return check


def int_range(lo: int, hi: Optional[int] = None) -> Rule:
  def check(v, _):
    if isinstance(v, bool) or not isinstance(v, int):
      return f'must be an integer, got {v!r}'
    if v < lo or (hi is not None and v > hi):
      return f'is {v}; allowed: {lo}..{hi if hi is not None else "inf"}'
    return None
  return check


def float_range(lo: float, hi: float = math.inf, lo_open: bool = False,
                hi_open: bool = False) -> Rule:
  def check(v, _):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
      return f'must be a number, got {v!r}'
    if v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi):
      left = '(' if lo_open else '['
      right = ')' if hi_open else ']'
      return f'is {v}; allowed: {left}{lo}, {hi}{right}'
    return None
  return check


def string(v, _) -> Optional[str]:
  return None if isinstance(v, str) else f'must be a string, got {v!r}'


def boolean(v, _) -> Optional[str]:
  return None if isinstance(v, bool) else f'must be true/false, got {v!r}'


def all_of(*rules: Rule) -> Rule:
  """The first problem of `rules`, checked in order."""

  def check(v, c):
    for rule in rules:
      found = rule(v, c)
      if found:
        return found
    return None

  return check
