"""The one error type of bad user input, and the checks that raise it."""

import ml_collections


class UserInputError(ValueError):
  """Bad input from the user (config, flags, workdir): reported as one line, never a traceback."""


def expect(ok: bool, message: str) -> None:
  """Raises `UserInputError(message)` unless `ok`: the config checks' one-line errors."""
  if not ok:
    raise UserInputError(message)


def expect_positive(section: ml_collections.ConfigDict, prefix: str, names) -> None:
  """Each of `section`'s fields `names` must be a positive number (`prefix` names the section)."""
  for name in names:
    expect(section[name] > 0, f'config.{prefix}.{name}={section[name]}; expected > 0.')
