"""The one exception type for mistakes a user can make and fix (bad paths, unreadable files, bad config), and
how a command-line tool reports one."""

import sys


class UserError(Exception):
    """A problem in the user's input or configuration.

    The message names the file or config key and says what to do; entry points print it as one line
    instead of a traceback.
    """


def fail(message: str, code: int = 2) -> None:
    """Print one error line on stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
