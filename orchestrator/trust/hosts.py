"""Which Host headers are served (DNS rebinding), as Jupyter Server decides.

When the server listens on loopback only, a request's Host must be a loopback name
(``localhost``, ``*.localhost``), an IP literal (a rebinding attack needs a name), or a name
listed in ``--allowed-hosts``. Listening beyond loopback, any Host is served unless
``--allowed-hosts`` is given, which then applies the same way. ``*`` allows every name; an entry
``*.example.com`` allows the names below ``example.com``.
"""

from __future__ import annotations

import ipaddress

FLAG = "--allowed-hosts (ORCHESTRATOR_ALLOWED_HOSTS)"


def listens_on_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_allowed(text: str | None) -> tuple[str, ...]:
    """``a.example, *.b.example`` as lower-case entries; ConfigError-free (empty: none)."""
    if not text:
        return ()
    return tuple(part.strip().lower().rstrip(".") for part in text.split(",") if part.strip())


def _name(host_header: str) -> str:
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        value = name
    return value.rstrip(".")


class HostRule:
    def __init__(self, listen_host: str, allowed: tuple[str, ...]) -> None:
        self.enforced = listens_on_loopback(listen_host) or bool(allowed)
        self.allow_all = "*" in allowed
        self.exact = frozenset(entry for entry in allowed if not entry.startswith("*."))
        self.suffixes = tuple(entry[1:] for entry in allowed if entry.startswith("*."))
        self._answers: dict[str, bool] = {}
        """Answers for Host values seen (a few per deployment; bounded)."""

    def allows(self, host_header: str | None) -> bool:
        if not self.enforced or self.allow_all or host_header is None:
            return True  # no Host at all: not a browser, so no rebinding
        answer = self._answers.get(host_header)
        if answer is None:
            answer = self._decide(host_header)
            if len(self._answers) < 1024:
                self._answers[host_header] = answer
        return answer

    def _decide(self, host_header: str) -> bool:
        if "," in host_header:
            return False  # several Host headers: which one would the browser have meant?
        name = _name(host_header)
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        if name == "localhost" or name.endswith(".localhost"):
            return True
        return name in self.exact or any(name.endswith(suffix) for suffix in self.suffixes)
