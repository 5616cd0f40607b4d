"""Crash matrix: money calls through a real server process killed mid-call (PostgreSQL)."""
