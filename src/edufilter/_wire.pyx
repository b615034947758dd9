# cython: language_level=3
"""The Python face of _wire.pxd: its cpdef enums (Code, DnsType), defined once there for C and Python."""
