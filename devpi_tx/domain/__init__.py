"""What one transaction does: users, indexes, releases, push, queries; storage keys; login tokens."""
