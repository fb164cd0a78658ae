"""followup-scheduler: turns events into timely, welcome outreach."""
