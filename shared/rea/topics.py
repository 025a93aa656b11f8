"""Every topic name, in one place, and which topic each event type travels on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Topic names under a prefix, so several deployments (or tests) can share one broker.

    Each topic has one producing side: users (campaign requests), people's commands
    (control), or exactly one service.
    """

    prefix: str = "rea"

    @property
    def campaign_requests(self) -> str:
        return f"{self.prefix}.campaign.requests"

    @property
    def control(self) -> str:
        """Decisions of people: plan approvals, pauses, resumes and cancellations, budget
        extensions, acceptances."""
        return f"{self.prefix}.control"

    @property
    def planner_events(self) -> str:
        return f"{self.prefix}.planner.events"

    @property
    def hypothesis_events(self) -> str:
        return f"{self.prefix}.hypothesis.events"

    @property
    def job_queue(self) -> str:
        """Work for the job workers, keyed by job id so jobs spread over the consumer group."""
        return f"{self.prefix}.jobs.queue"

    @property
    def job_events(self) -> str:
        return f"{self.prefix}.jobs.events"

    @property
    def executor_events(self) -> str:
        return f"{self.prefix}.executor.events"

    @property
    def kernel_requests(self) -> str:
        """Kernel searches people (or a campaign's launch) ask for."""
        return f"{self.prefix}.kernel.requests"

    @property
    def kernel_events(self) -> str:
        return f"{self.prefix}.kernel.events"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.deadletter"

    def group(self, name: str) -> str:
        """A consumer group id under the prefix: deployments sharing a broker never share a group
        (a stale member of another deployment's group would stall this one's rebalances)."""
        return f"{self.prefix}.{name}"

    def all(self) -> list[str]:
        return [
            self.campaign_requests,
            self.control,
            self.planner_events,
            self.hypothesis_events,
            self.job_queue,
            self.job_events,
            self.executor_events,
            self.kernel_requests,
            self.kernel_events,
            self.dead_letter,
        ]

    def for_event(self, event_type: str) -> str:
        """The topic an event type is published on."""
        routes = {
            "campaign.requested": self.campaign_requests,
            "plan.approved": self.control,
            "proposal.accepted": self.control,
            "campaign.paused": self.control,
            "campaign.resumed": self.control,
            "campaign.cancelled": self.control,
            "budget.extended": self.control,
            "grant.created": self.control,
            "grant.revoked": self.control,
            "phase.paused": self.executor_events,
            "phase.resumed": self.executor_events,
            "budget.warning": self.executor_events,
            "hypotheses.generated": self.hypothesis_events,
            "job.submitted": self.job_queue,
            "job.started": self.job_events,
            "job.completed": self.job_events,
            "job.failed": self.job_events,
            "phase.concluded": self.executor_events,
            "runbook.applied": self.executor_events,
            "campaign.rejected": self.planner_events,
            "hypotheses.requested": self.planner_events,
            "plan.proposed": self.planner_events,
            "phase.started": self.planner_events,
            "campaign.completed": self.planner_events,
            "kernel.search.requested": self.kernel_requests,
            "kernel.candidate.evaluated": self.kernel_events,
            "kernel.published": self.kernel_events,
            "kernel.search.failed": self.kernel_events,
        }
        return routes[event_type]
