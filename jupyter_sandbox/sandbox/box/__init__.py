"""``agentscope_runtime.sandbox.box``'s layout: the SDK's ``Sandbox`` base class."""
