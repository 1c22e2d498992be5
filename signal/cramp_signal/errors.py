"""Exceptions of the pure signal package.

::

    SignalError          (ValueError) arrays or parameters the signal code cannot use
    └── ConfigurationError   a DetectorConfig whose values contradict each other
"""

from __future__ import annotations


class SignalError(ValueError):
    """Base of every error raised on purpose by :mod:`cramp_signal`."""


class ConfigurationError(SignalError):
    """Detector or filter parameters are out of range or inconsistent."""
