"""Tests of mirror/."""
