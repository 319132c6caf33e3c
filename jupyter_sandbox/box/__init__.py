"""The box: the small HTTP server that runs inside each sandbox.

It serves the upstream box API (shell commands, an IPython kernel, the workspace file API) to
the manager, behind a per-sandbox bearer token. Start it with ``python -m jupyter_sandbox.box``;
see ``__main__.py`` for the startup protocol. Nothing is imported here, so that starting the box
loads only what it uses.
"""
