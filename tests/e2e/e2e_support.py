"""Constants shared by the browser tests (a module of its own: every test directory has a
``conftest``, so ``from conftest import …`` would depend on which one was imported last)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"   # screenshots; gitignored
