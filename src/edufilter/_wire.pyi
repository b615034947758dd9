from enum import IntEnum

class DnsType(IntEnum):
    DNS_TYPE_SVCB = 64
    DNS_TYPE_HTTPS = 65

class Code(IntEnum):
    CODE_UNDECIDED = 0
    CODE_ALLOW = 1
    CODE_REJECT = 2
    CODE_DROP = 3
    CODE_PASS = 4
    CODE_BOUND = 5
    CODE_SAFE_SEARCH = 6
    CODE_INJECTED = 7
    CODE_HTTP_FOLLOW = 8
    CODE_INVALID = 9
