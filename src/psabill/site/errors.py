"""The site's one exception: a page or directory that cannot be written."""

from __future__ import annotations

from psabill.errors import StateError


class SiteError(StateError):
    """The site could not be written (a one-line message naming the path and the fix)."""
