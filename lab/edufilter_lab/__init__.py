"""Network-namespace lab: real clients and servers across veth pairs, and tshark as the oracle.

netns builds and tears down namespaces; traffic runs servers, clients and captures in them;
tshark says which names Wireshark sees in a capture. Used by tests/lab and the demo; needs root.
"""
