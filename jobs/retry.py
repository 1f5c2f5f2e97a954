"""Each startup step's retry policy, and the one way a step is retried (tenacity).

A step raises :class:`TransientError` to be retried (exponential backoff with jitter, bounded
attempts, each retry reported) and :class:`PermanentError` to fail at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from jobs.errors import TransientError
from jobs.reporting import Reporter, StepName

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial: float
    maximum: float
    deadline: float | None = None

    def stop(self) -> stop_base:
        rule: stop_base = stop_after_attempt(self.attempts)
        if self.deadline is not None:
            rule = rule | stop_after_delay(self.deadline)
        return rule


POLICIES: dict[StepName, RetryPolicy] = {
    "state": RetryPolicy(attempts=10_000, initial=0.2, maximum=5.0),
    "venv": RetryPolicy(attempts=3, initial=1.0, maximum=10.0),
    "requirements": RetryPolicy(attempts=5, initial=2.0, maximum=30.0),
    "marimo": RetryPolicy(attempts=5, initial=1.0, maximum=15.0),
}


async def run_step(
    step: StepName,
    work: Callable[[], Awaitable[T]],
    reporter: Reporter,
    policy: RetryPolicy,
) -> T:
    """``work()`` until it succeeds, raises :class:`PermanentError`, or the policy gives up."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        reporter.step_retrying(step, state.attempt_number + 1, policy.attempts, delay, str(error))

    retrying = AsyncRetrying(
        stop=policy.stop(),
        wait=wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum),
        retry=retry_if_exception_type(TransientError),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await work()
    raise AssertionError("unreachable: tenacity reraises the last error")
