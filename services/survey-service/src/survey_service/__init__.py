"""survey-service: NPS, CSAT and CES surveys that close the loop."""
