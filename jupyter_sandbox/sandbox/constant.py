"""Constants custom type modules import, as in ``agentscope_runtime.sandbox.constant``."""

TIMEOUT = 60  # seconds a tool call may run, the default `timeout` of a registration
