"""End-to-end tests use the session's local mesh (tests/fixtures/mesh.py)."""

from fixtures.mesh import TINY

__all__ = ["TINY"]
