"""Placeholder: filled in by the issue that owns it."""
__all__: list[str] = []
