"""Quix Cloud: its injected variables, its portal API, and notebook edits saved to the
application's files."""
