"""Route modules: accounts, scans, admin, health."""
