"""Errors that carry a message meant for the user, shown as one line instead of a traceback."""


class SwarmError(Exception):
    """Base class: the message is complete and safe to show to a user."""


class ConfigError(SwarmError):
    """A bad parameter, flag or setting."""


class ServiceUnavailable(SwarmError):
    """A service the run depends on (ledger, Qdrant, an API) cannot be reached."""
