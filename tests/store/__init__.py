"""Tests of store/ (the storage contract suite runs here)."""
