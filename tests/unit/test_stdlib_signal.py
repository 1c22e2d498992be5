"""The repo's ``signal/`` folder must not shadow the stdlib ``signal`` module."""

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_signal_folder_is_not_a_package() -> None:
    assert not (REPO / "signal" / "__init__.py").exists()
    assert (REPO / "signal" / "cramp_signal" / "__init__.py").exists()


def test_stdlib_signal_from_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import signal; print(int(signal.SIGINT))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(int(signal.SIGINT))


def test_asyncio_runs_under_pytest() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert asyncio.run(answer()) == 42
    assert signal.getsignal(signal.SIGINT) is not None
