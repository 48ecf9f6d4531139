"""Built-in plugins: registered at start-up through the same hooks a component uses."""
