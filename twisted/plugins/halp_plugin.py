"""The ``twistd halp`` plugin: the HALP server (see :mod:`halp.tap`)."""

from twisted.application.service import ServiceMaker

halp = ServiceMaker(
    "HALP server",
    "halp.tap",
    "Serve HALP/1, the Host Address List Protocol",
    "halp",
)
