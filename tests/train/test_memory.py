import sys

import pytest

from recdeploy.train.memory import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory_takes_on_glibc_and_says_so():
    import platform
    took = keep_freed_memory()
    assert took is (platform.libc_ver()[0] == "glibc")


def test_keep_freed_memory_is_a_harmless_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
