"""The auth modes, apart from orchestrator.auth so that configuration imports stay light."""

from typing import Literal

AuthMode = Literal["quix", "token", "none"]
