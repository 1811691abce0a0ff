"""Readers, embedded samples, synthetic scenes and augmentations."""
