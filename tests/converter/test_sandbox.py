"""Throwaway decoding processes (converter.sandbox) and the decoder policy
(converter.decoders): a child's death is corrupt_pixel_data, its exceptions
come back as they were, results keep their order, children share the
caller's memory limit; GDCM is never the decoder of a syntax pylibjpeg
decodes; a decoder's BaseException is a failure, a timeout is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from rq.timeouts import JobTimeoutException

from converter import decoders, sandbox
from converter.errors import UnreadableInput
from converter.loading import decode


def _frames(k):
    for j in range(3):
        yield np.full((2, 2), k * 10 + j)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_back_in_task_order(workers):
    got = [int(a[0, 0]) for a in sandbox.stream(_frames, 7, workers)]
    assert got == [k * 10 + j for k in range(7) for j in range(3)]


def _abort_on_4(k):
    if k == 4:
        os.abort()
    yield k


@pytest.mark.parametrize("workers", [1, 2])
def test_a_child_that_aborts_is_corrupt_pixel_data_and_the_rest_are_ended(workers):
    seen = []
    with pytest.raises(UnreadableInput) as err:
        for k in sandbox.stream(_abort_on_4, 9, workers):
            seen.append(k)
    assert err.value.code == "corrupt_pixel_data"
    assert seen == [0, 1, 2, 3]
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # every child was reaped


def _raises(k):
    if k == 1:
        raise UnreadableInput("an image's size does not match its header",
                              code="corrupt_pixel_data")
    if k == 2:
        raise MemoryError
    yield k


def test_a_childs_exception_comes_back_as_it_was():
    with pytest.raises(UnreadableInput) as err:
        list(sandbox.stream(_raises, 2))
    assert err.value.code == "corrupt_pixel_data"
    assert err.value.message == "an image's size does not match its header"
    with pytest.raises(MemoryError):
        list(sandbox.stream(lambda k: _raises(2), 1))


def test_children_share_the_callers_address_space_limit():
    code = """if True:
        import json, resource
        from converter import sandbox
        vm = sandbox.address_space()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (900 << 20), resource.RLIM_INFINITY))
        def limits(k):
            yield (resource.getrlimit(resource.RLIMIT_AS)[0] - sandbox.address_space()) >> 20
        print(json.dumps([list(sandbox.stream(limits, 2, 2)), sandbox._child_share(2) >> 20,
                          list(sandbox.stream(limits, 1, 1, reserve=100 << 20)),
                          sandbox._child_share(1, 100 << 20) >> 20,
                          sandbox._child_share(1, 800 << 20) >> 20]))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    (first, second), share, (alone,), alone_share, equal = json.loads(out)
    assert 290 <= share <= 300  # 900 MB shared by two children and their parent
    assert abs(first - share) <= 2 and abs(second - share) <= 2
    assert 790 <= alone_share <= 800  # the parent keeps the 100 MB it reserved
    assert abs(alone - alone_share) <= 2
    assert 440 <= equal <= 450  # a reserve beyond an equal share: an equal share


def test_no_limit_no_share():
    import resource

    if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
        assert sandbox._child_share(2) is None


def test_gdcm_decodes_no_syntax_another_plugin_decodes():
    from pydicom.pixels import get_decoder

    decoders.prefer_safe_decoders()
    for uid in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
                "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"):
        plugins = get_decoder(uid).available_plugins
        assert "pylibjpeg" in plugins and "gdcm" not in plugins, (uid, plugins)
    assert set(get_decoder("1.2.840.10008.1.2.5").available_plugins) == {"pylibjpeg", "pydicom"}


class PanicException(BaseException):
    """What a Rust decoder raises (pyo3's panic type is a BaseException)."""


def test_which_exceptions_are_a_decoders_failure():
    assert decoders.is_decoder_failure(PanicException("index out of bounds"))
    assert decoders.is_decoder_failure(RuntimeError("all plugins failed"))
    assert decoders.is_decoder_failure(ValueError("bad"))
    for passing in (KeyboardInterrupt(), SystemExit(1), GeneratorExit(), MemoryError(),
                    RuntimeError("can't start new thread"),
                    JobTimeoutException("Task exceeded maximum timeout value (1 seconds)")):
        assert not decoders.is_decoder_failure(passing), passing
    assert issubclass(JobTimeoutException, Exception)  # why `except Exception` was not enough


@pytest.mark.parametrize("raised,expected", [
    (PanicException("index out of bounds"), UnreadableInput),
    (JobTimeoutException("Task exceeded maximum timeout value"), JobTimeoutException),
    (MemoryError(), MemoryError),
    (KeyboardInterrupt(), KeyboardInterrupt),
])
def test_decode_turns_decoder_failures_into_corrupt_pixel_data_and_nothing_else(
        monkeypatch, raised, expected):
    import pydicom.pixels

    def decoder(*args, **kwargs):
        raise raised

    monkeypatch.setattr(pydicom.pixels, "pixel_array", decoder)
    with pytest.raises(expected) as err:
        decode(get_testdata_file("MR_small_RLE.dcm"))
    if expected is UnreadableInput:
        assert err.value.code == "corrupt_pixel_data"


def test_header_readers_share_the_limit_too():
    code = """if True:
        import json, resource
        from converter import sandbox
        from converter.loading import ReadingPool
        from tests.converter.test_sandbox import _room
        vm = sandbox.address_space()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (900 << 20), resource.RLIM_INFINITY))
        pool = ReadingPool(2)
        limits = pool.get().map(_room, range(2))
        pool.terminate()
        print(json.dumps(limits))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert all(280 <= room <= 302 for room in json.loads(out))



def _room(_):
    """MB this process may still grow by under its address-space limit."""
    import resource

    return (resource.getrlimit(resource.RLIMIT_AS)[0] - sandbox.address_space()) >> 20


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("start", ["unlimited", "limited"])
def test_limit_growth_sets_a_finite_limit_whatever_the_process_had(start):
    # RLIM_INFINITY is -1: taking min() with it once left processes unlimited
    code = f"""
import resource
from converter import sandbox
if {start!r} == "limited":
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))
share = 256 << 20
set_to = sandbox.limit_growth(share)
soft, _ = resource.getrlimit(resource.RLIMIT_AS)
assert soft == set_to, (soft, set_to)
assert 0 < soft <= sandbox.address_space() + share, soft
try:
    bytearray(512 << 20)
except MemoryError:
    print("refused")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused"
