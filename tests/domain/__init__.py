"""Tests of domain/."""
