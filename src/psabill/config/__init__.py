"""The config: its one schema, the typed settings, secrets, paths, readiness and the reference."""
