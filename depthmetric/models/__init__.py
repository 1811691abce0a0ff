"""Reference depth models."""
