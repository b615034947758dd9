"""edufilter: a content-filtering firewall for school gateways."""

__version__ = "0.1.0"
