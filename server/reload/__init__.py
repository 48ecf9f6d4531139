"""Hot reload: loading one component, the component manager (build, then swap) and the folder watcher."""
