"""The config: YAML with lines, ${VAR}, templates, durations, the pipeline model, compile and path matching."""
