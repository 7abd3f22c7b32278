"""The event processor and its hooks: docs, descriptions, search."""
