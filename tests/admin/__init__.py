"""Tests of admin/."""
