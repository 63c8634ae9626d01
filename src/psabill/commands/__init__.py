"""One module per command group; each exposes a Click command named after it."""
