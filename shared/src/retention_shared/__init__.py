"""The Retention platform kit: plumbing every service shares. It holds no business logic."""
