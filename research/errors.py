"""The one exception type for bad input.

Anything a user can get wrong (a config field, a missing file, a malformed table) raises
`UserError` with a message that names the field or file, the value given and what is allowed.
The command line turns it into that message on stderr and exit code 2, before anything compiles.
"""


class UserError(ValueError):
  """Bad input from the user: printed as-is by `launch`, exit code 2."""


class ConfigError(UserError):
  """A config field has a wrong value."""

  def __init__(self, field: str, value, allowed: str):
    self.field, self.value, self.allowed = field, value, allowed
    super().__init__(f"config field '{field}' = {value!r}: {allowed}")


def require(condition: bool, field: str, value, allowed: str) -> None:
  """Raise ConfigError(field, value, allowed) unless condition holds."""
  if not condition:
    raise ConfigError(field, value, allowed)
