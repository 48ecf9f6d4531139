"""Hook specifications, the plugin manager, lifecycle hooks and the registry of step types and endpoints."""
