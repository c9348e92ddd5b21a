"""Talking to OCI / Docker registries: config, credentials, auth, the client, pull and push.

The client's API (what other packages may use) is documented in `engine.registry.client`.
Nothing here is imported on a build that never reaches a registry.
"""
