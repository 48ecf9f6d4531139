"""The HTTP surface: middleware, trigger and webhook dispatch, health, OpenAPI."""
