"""psabill: keep PSA agreement quantities in step with real seat counts."""

__version__ = "0.1.0"
