"""The Retention console: the web UI for shop staff and operators, served at /console."""
