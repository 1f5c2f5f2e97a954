"""The trust boundary: who may come in (sign-in, sessions, the secret that signs them, Host
and origin checks, throttling, bounds on what an unauthenticated client can make us hold)."""
