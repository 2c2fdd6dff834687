"""Automatic probes: safe fetching, one check per function, scheduled jobs."""
