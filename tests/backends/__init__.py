"""Small real servers the proxy tests talk to, one per behaviour (each module builds one)."""
