"""The one error tree: every public exception class of edufilter is an EdufilterError, and an error
the kernel reported carries its errno as a field."""

from __future__ import annotations

import errno
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import edufilter
from edufilter.errors import EdufilterError, KernelError, NetfilterError, PolicyError, QueueError
from edufilter.rules import nft_netlink
from edufilter.rules.conntrack import ConntrackError

# Exceptions that are not failures to report: each is turned into or handled as something else.
OUTSIDE_THE_TREE = {
    "edufilter.api.problems.Problem",  # the API's HTTP answer, which the error middleware makes from an EdufilterError
    "edufilter.api.uploads.Cancelled",  # an upload stopped on purpose (a request, the API stopping)
}


def test_every_public_exception_class_is_an_edufilter_error() -> None:
    outside = set()
    for module_info in pkgutil.walk_packages(edufilter.__path__, "edufilter."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__ \
                    and not name.startswith("_") and not issubclass(value, EdufilterError):
                outside.add(f"{module.__name__}.{name}")
    assert outside == OUTSIDE_THE_TREE


def test_the_domain_tables_errors_are_policy_errors() -> None:
    from edufilter.classify._classify import DomainTable, HashCollision, TableFormatError

    assert issubclass(TableFormatError, PolicyError) and issubclass(HashCollision, PolicyError)
    try:
        DomainTable(b"short")
    except PolicyError as error:
        assert "shorter than its header" in str(error)
    else:
        raise AssertionError("a truncated domain table was accepted")


def test_a_queue_bind_the_kernel_refuses_carries_its_errno() -> None:
    """Bound without CAP_NET_ADMIN (as nobody, when the tests run as root): the kernel's EPERM."""
    check = ("from edufilter.capture._queue import PacketQueue\n"
             "from edufilter.errors import QueueError\n"
             "try:\n    PacketQueue(4321)\nexcept QueueError as error:\n    print(error.errno)\n")
    if os.geteuid() == 0:
        check = "import os\nos.setgid(65534)\nos.setuid(65534)\n" + check
    source = str(Path(edufilter.__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": source})
    assert result.stdout.strip() == str(errno.EPERM), result.stderr


def test_kernel_errors_keep_the_errno_they_were_given() -> None:
    assert issubclass(QueueError, KernelError) and issubclass(ConntrackError, NetfilterError)
    assert issubclass(NetfilterError, KernelError)
    refused = nft_netlink._failure("adding the queue rule", errno.ENOENT)
    assert refused.errno == errno.ENOENT and "nft_compat" in str(refused)
    assert ConntrackError("conntrack delete: gone", errno.ENOENT).errno == errno.ENOENT
    assert NetfilterError("marks.mask 0x0: must be a non-zero 32-bit mask").errno is None  # our own check
