"""Helpers shared by the tests (imported as ``support``): environments, zones, published-schema fixtures."""
