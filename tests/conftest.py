"""Shared pytest configuration: fixtures for real servers live in :mod:`tests.fixtures`."""

pytest_plugins = ["tests.fixtures.bluez", "tests.fixtures.servers", "tests.fixtures.nights"]
