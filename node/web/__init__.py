"""The web face: the composition root (app), the API handlers, actions, auth, errors, OpenAPI, presentation."""
