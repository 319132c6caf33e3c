"""`python -m jupyter_sandbox` is `jupyter sandbox-server`."""

from jupyter_sandbox.app import main

main()
