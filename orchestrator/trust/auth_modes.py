"""The auth modes, apart from orchestrator.trust.auth so that configuration imports stay light."""

from typing import Literal

AuthMode = Literal["quix", "token", "none"]
