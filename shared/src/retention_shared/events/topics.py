"""Topics, named by domain and version. Each is declared once here, with what it carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    description: str

    def qualified(self, namespace: str = "") -> str:
        """The topic's name on the broker, with the environment's namespace prefix if one is set."""
        return f"{namespace}.{self.name}" if namespace else self.name

    def dead_letter(self, namespace: str = "") -> str:
        return f"{self.qualified(namespace)}.dlq"


TENANCY = Topic("retention.tenancy.v1", "Shops and their API keys (hashes only), replicated to every service")
CUSTOMER = Topic("retention.customer.v1", "Customer profiles, consent, loyalty tiers and erasure")
ACTIVITY = Topic("retention.activity.v1", "What customers do: purchases, refunds, logins, tickets")
INSIGHT = Topic("retention.insight.v1", "What the segmentation worker concludes: segments and churn risk")
FOLLOWUP = Topic("retention.followup.v1", "Follow-ups scheduled, sent and failed")
SURVEY = Topic("retention.survey.v1", "Survey answers")

ALL_TOPICS: tuple[Topic, ...] = (TENANCY, CUSTOMER, ACTIVITY, INSIGHT, FOLLOWUP, SURVEY)
