"""The one exception type for mistakes a user can make and fix (bad paths, unreadable files, bad config)."""


class UserError(Exception):
    """A problem in the user's input or configuration.

    The message names the file or config key and says what to do; entry points print it as one line
    instead of a traceback.
    """
