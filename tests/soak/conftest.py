"""Soak tests are opt-in: deselected unless the ``-m`` expression names ``soak``.

``pytest`` (and ``bash .ci/run``) skip the overnight soak; ``pytest -m soak tests/soak``
runs it.  The shortened night in :mod:`tests.soak.test_overnight` is not a soak test
(it is marked ``integration``) and always runs.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``soak`` items when ``-m`` does not mention ``soak``."""
    if "soak" in (config.option.markexpr or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("soak") is not None]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]
