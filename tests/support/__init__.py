"""Test support: compact published-schema fixtures and a validator over them."""
