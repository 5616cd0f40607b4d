"""Optional integrations with third-party engines (each needs its own extra)."""
