"""zeekndm: Network Detection Models over Zeek and Suricata connection logs."""

__version__ = "0.1.0"
