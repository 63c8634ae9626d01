"""What a remote API call can end in, for every client (the PSAs, LastPass).

Every message is one line, already scrubbed of the client's secrets.
"""

from typing import Optional


class RemoteError(Exception):
    """A request failed after retries, or the API answered something psabill cannot use.

    ``status`` is the HTTP status of the last answer, when there was one: a 429 or 5xx that outlasted
    the retries is worth another try later, a 400 is not.
    """

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether a later attempt may succeed (the API was overloaded or away, not refusing)."""
        return self.status is not None and (self.status == 429 or self.status >= 500)


class AuthRefused(RemoteError):
    """The API refused the credentials (401/403): retried at a later firing, for credentials being rotated."""

    transient = True  # type: ignore[assignment]


class Unreachable(RemoteError):
    """The API could not be reached at all (connection refused, DNS, TLS, timeouts)."""

    transient = True  # type: ignore[assignment]


class NoAnswer(Unreachable):
    """A write was sent but its answer never came (timed out, connection dropped): it may have been applied."""


class Halted(RemoteError):
    """A request not sent, because the run was stopping."""

    transient = True  # type: ignore[assignment]
