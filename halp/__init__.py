"""
HALP, the Host Address List Protocol: decentralized peer introduction for
P2P software, built on Twisted.

See ``README.md`` and ``docs/`` for the protocol and the server.
"""

__version__ = "0.1.0"
