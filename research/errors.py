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


class EnvironmentFault(RuntimeError):
  """The machine refused (a read-only or full disk, no permission): printed as one line naming
  the path, exit code 3. `launch` turns any OSError that reaches it into one of these."""


EXIT_CODES = {"ok": 0, "failed": 1, "bad input": 2, "environment": 3, "interrupted": 143}


def describe_os_error(e: OSError, doing: str = "") -> str:
  """One line for an OSError: what failed, on which path ("no space left on device while writing
  runs/x/summary.json")."""
  import errno
  import os
  reason = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}.get(
                e.errno, e.strerror or type(e).__name__)
  if e.errno is not None and e.strerror and e.strerror != os.strerror(e.errno):
    reason = f"{reason} ({e.strerror})"  # the raiser's own detail, e.g. the sizes
  path = e.filename if e.filename is not None else ""
  where = f" {doing}" if doing else (" at" if path else "")
  text = f"{reason}{where}{' ' + os.fspath(path) if path else ''}"
  return text if e.errno is not None or not str(e) else f"{text}: {e}"
