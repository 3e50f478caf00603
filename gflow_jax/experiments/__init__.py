"""Named, reproducible studies."""
