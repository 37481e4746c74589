"""jobs.submit's retry while a freshly started cluster's job agent is not up (the Jobs API answers HTTP 500
with Ray's "No available agent" text, and the job was not accepted)."""

import pytest

from jobs.submit import AGENT_NOT_READY, submit_when_ready


class AgentComesUpAfter:
    """Answers submit_job as Ray's JobSubmissionClient does while the head has no agent, `failures` times."""

    def __init__(
        self,
        failures: int,
        error: str = f"Request failed with status code 500: {AGENT_NOT_READY}, please try again later.",
    ):
        self.failures, self.error, self.calls = failures, error, []

    def submit_job(self, **submission):
        self.calls.append(submission)
        if len(self.calls) <= self.failures:
            raise RuntimeError(self.error)
        return "raysubmit_1"


def test_a_submission_waits_for_the_job_agent_and_is_sent_unchanged():
    client = AgentComesUpAfter(2)
    assert submit_when_ready(client, wait_s=5, retry_s=0.01, entrypoint="python -m jobs.run") == "raysubmit_1"
    assert client.calls == [{"entrypoint": "python -m jobs.run"}] * 3


def test_it_gives_up_after_the_wait_and_other_errors_are_not_retried():
    with pytest.raises(RuntimeError, match=AGENT_NOT_READY):
        submit_when_ready(AgentComesUpAfter(1000), wait_s=0.05, retry_s=0.01, entrypoint="x")
    refused = AgentComesUpAfter(1, error="Request failed with status code 400: bad runtime_env")
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        submit_when_ready(refused, wait_s=5, retry_s=0.01, entrypoint="x")
    assert len(refused.calls) == 1
