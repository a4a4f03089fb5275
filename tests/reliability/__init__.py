"""Reliability: workers killed mid-job, Redis restarted under load, and what the runs leave."""
