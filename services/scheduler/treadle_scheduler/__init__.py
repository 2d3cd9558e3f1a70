"""Treadle scheduler: the public front door, sessions and multi-tenant clock cycles."""
