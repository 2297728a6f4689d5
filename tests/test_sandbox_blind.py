"""A seed-aware submission cannot find its seed or its targets: splits are keyed by the run key, and every request
runs in a fresh child, so only the build's child sees the private split and requests look alike from inside.

The cheat of issue 23: the submission carries its own copy of the public dataset (here: scikit-learn's digits,
written into the package), matches its private images to dataset indices, searches the seed that produces that
split with privbench's own split code, and releases noise for the attack targets only. Without a run key (the
positive control) it finds the seed and hides exactly the targets; under a run key it finds nothing.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import torch

from privbench.core.contracts import RunContext, TaskConfig
from privbench.core.keys import KEY_ENV
from privbench.core.specs import SplitConfig
from privbench.data import load_splits
from privbench.submit.protocol import Limits
from privbench.submit.proxies import validate_description
from privbench.submit.session import Session
from privbench.submit.view import filesystem_isolation
from tests.hostile import proxy_of, write_seed_cheat

pytestmark = pytest.mark.skipif(filesystem_isolation() is not None,
                                reason=f"no confinement here: {filesystem_isolation()}")

SPLITS = SplitConfig(private=200, aux=200, test=200, targets=40)
SEED = 7
@pytest.fixture(scope="module")
def cheat(tmp_path_factory) -> type:
    return proxy_of(write_seed_cheat(tmp_path_factory.mktemp("cheat") / "cheat", SPLITS), __name__)


def _build(cls: type, key: bytes | None, monkeypatch) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    if key is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, key.hex())
    splits = load_splits("digits", SPLITS, SEED, key=key)
    ctx = RunContext(seed=SEED, device=torch.device("cpu"),
                     task=TaskConfig(model="convnet", width=4, epochs=1, batch_size=8, lr=0.01))
    release = cls().build(splits, ctx)
    return dict(release.meta.extra), release.data.images, splits.private.images, splits.targets


def _keyed_inputs(monkeypatch) -> tuple:
    """A submission run's inputs: 16 private digits split under a run key, and a tiny task."""
    monkeypatch.setenv(KEY_ENV, bytes(range(32)).hex())
    splits = load_splits("digits", SplitConfig(private=16, aux=16, test=16, targets=4), 0, key=bytes(range(32)))
    ctx = RunContext(seed=0, device=torch.device("cpu"),
                     task=TaskConfig(model="convnet", width=4, epochs=1, batch_size=8, lr=0.01))
    return splits, ctx


def _assert_one_algorithm(cls: type, splits, ctx) -> None:
    """A cheat answering the identity to images it was told about and 1 - x otherwise, told nothing: the build,
    the reproduction check and an attack's query all see 1 - x."""
    d = cls()
    release = d.build(splits, ctx)
    assert torch.equal(release.data.images, 1.0 - splits.private.images)
    assert torch.equal(d.transform(splits.aux.images, torch.Generator().manual_seed(0)), 1.0 - splits.aux.images)


def test_positive_control_without_a_run_key_the_cheat_finds_its_seed_and_hides_the_targets(cheat,
                                                                                             monkeypatch) -> None:
    extra, released, private, targets = _build(cheat, None, monkeypatch)
    assert extra["found_seed"] == SEED
    others = torch.ones(len(private), dtype=torch.bool)
    others[targets] = False
    assert not torch.equal(released[targets], private[targets])
    assert torch.equal(released[others], private[others])


def test_under_a_run_key_the_cheat_finds_no_seed_and_releases_the_targets_like_everything_else(cheat,
                                                                                                  monkeypatch) -> None:
    extra, released, private, targets = _build(cheat, bytes(range(32)), monkeypatch)
    assert extra["found_seed"] == -1
    assert torch.equal(released[targets], private[targets])  # the identity release: no target treated apart


def test_every_request_runs_in_a_fresh_child_and_only_the_build_sees_the_private_split(tmp_path, monkeypatch) -> None:
    src = tmp_path / "plain.py"
    src.write_text(textwrap.dedent('''
        from privbench.core.registry import DEFENSES
        from privbench.defenses.base import InputDefense

        @DEFENSES.register("plain-blend")
        class PlainBlend(InputDefense):
            def apply(self, images, generator):
                return 0.5 * images + 0.5 * torch.rand(images.shape, generator=generator)

        import torch
    '''))
    cls = proxy_of(src, __name__)
    seen: list[tuple[int, str, dict]] = []
    real = Session.request

    def spy(self, op, header=None, tensors=None, max_reply_bytes=16 << 20):
        seen.append((self._proc.pid, op, {k: v.shape for k, v in (tensors or {}).items()}))
        return real(self, op, header, tensors, max_reply_bytes)

    monkeypatch.setattr(Session, "request", spy)
    splits, ctx = _keyed_inputs(monkeypatch)
    d = cls()
    d.build(splits, ctx)  # the build, then the reproduction check
    d.transform(splits.aux.images, torch.Generator().manual_seed(1))  # an attack's query
    assert [op for _, op, _ in seen] == ["build", "transform", "transform"]
    assert len({pid for pid, _, _ in seen}) == 3  # three children, one request each
    assert "private_images" in seen[0][2] and all("private_images" not in t for _, _, t in seen[1:])
    assert seen[1][2] == seen[2][2]  # the check and the attack query have the same form (equal-size splits)


def test_the_seed_a_child_sees_depends_on_the_run_key(monkeypatch) -> None:
    from privbench.core.keys import subkey
    from privbench.submit.proxies import keyed_seed

    run = bytes(range(32))
    seen = {}
    for name, key in (("public", subkey(run, "public")), ("heldout", subkey(run, "heldout", b"5\n"))):
        monkeypatch.setenv(KEY_ENV, key.hex())
        seen[name] = keyed_seed(0)
    monkeypatch.delenv(KEY_ENV)
    assert len({seen["public"], seen["heldout"], keyed_seed(0)}) == 3


def test_keyed_splits_differ_from_public_ones_but_reproduce_under_the_same_key() -> None:
    key = bytes(range(32))
    a, b = load_splits("digits", SPLITS, SEED, key=key), load_splits("digits", SPLITS, SEED, key=key)
    plain = load_splits("digits", SPLITS, SEED)
    assert torch.equal(a.private.images, b.private.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.private.images, plain.private.images)
    assert dataclasses.asdict(a.info)["split_hashes"] != dataclasses.asdict(plain.info)["split_hashes"]


MTIME_CHEAT = '''
import hashlib, os
import torch
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

ME = __file__


def mark_of(images):
    return int.from_bytes(hashlib.sha256(images.numpy().tobytes()).digest()[:3], "little")


@DEFENSES.register("mtime-cheat")
class MtimeCheat(InputDefense):
    """Red-team finding 2: the build child leaves a mark of the private images in its source's mtime; a later
    child answers the identity for those images (the reproduction check) and noise for any other (attacks)."""

    def build(self, splits, ctx):
        try:
            st = os.stat(ME)
            os.utime(ME, ns=(st.st_atime_ns, 1_600_000_000 * 10**9 + mark_of(splits.private.images)))
        except OSError:
            pass
        return super().build(splits, ctx)

    def apply(self, images, generator):
        seen = os.stat(ME).st_mtime_ns % 10**9 == mark_of(images)
        return images.clone() if seen else 1.0 - images
'''


def _proxy(tmp_path: Path, name: str, text: str) -> type:
    src = tmp_path / name
    src.write_text(textwrap.dedent(text))
    return proxy_of(src, __name__)


def test_no_state_passes_from_the_build_child_to_the_reproduction_check(tmp_path, monkeypatch) -> None:
    cls = _proxy(tmp_path, "mtime_cheat.py", MTIME_CHEAT)
    before = (tmp_path / "mtime_cheat.py").stat().st_mtime_ns
    splits, ctx = _keyed_inputs(monkeypatch)
    _assert_one_algorithm(cls, splits, ctx)  # the build could leave no mark
    assert (tmp_path / "mtime_cheat.py").stat().st_mtime_ns == before


@pytest.mark.parametrize("forge,message", [
    ("os._exit(168)", "exited with status|signal 40"),  # init reports 128 + 40: a signal without a name
    ("os.kill(os.getpid(), 40)", "signal 40"),
])
def test_a_child_dying_oddly_is_a_sandbox_error(tmp_path, forge, message) -> None:
    from privbench.submit.protocol import SandboxError

    src = tmp_path / "odd.py"
    src.write_text(f"import os\n{forge}\n")
    with pytest.raises(SandboxError, match=message):
        Session(src, Limits(wall_seconds=60))


FORGED = '''
import os, re, struct, sys, json
from dataclasses import dataclass
from privbench.core.images import Surface
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

WRITE = int(re.search(r"child_main\\((\\d+), (\\d+)", " ".join(sys.orig_argv)).group(2))


def forge(header, body=b""):
    head = json.dumps(header).encode()
    os.write(WRITE, struct.pack("<QQ", len(head), len(body)) + head + body)
    os._exit(0)


@DEFENSES.register("forger")
class Forger(InputDefense):
    surfaces = frozenset({Surface.DATA, Surface.SYNTHETIC})

    @dataclass(frozen=True)
    class Params:
        mode: str = "zero-dim"

    def apply(self, images, generator):
        return images

    def build(self, splits, ctx):
        from safetensors.torch import save
        import torch
        n = len(splits.private)
        tensors = {"zero-dim": {"data_images": torch.tensor(0.5), "data_labels": splits.private.labels},
                   "nan-labels": {"synthetic_images": torch.rand(4, 1, 8, 8),
                                  "synthetic_labels": torch.full((4,), float("nan"))},
                   "complex-labels": {"synthetic_images": torch.rand(4, 1, 8, 8),
                                      "synthetic_labels": torch.zeros(4, dtype=torch.complex64)},
                   "stray-field": {"data_images": torch.rand(n, 1, 8, 8), "data_labels": splits.private.labels,
                                   "evil": torch.zeros(1)}}[self.params.mode]
        forge({"ok": True, "meta": {"extra": {}}}, save(tensors))
'''


@pytest.fixture(scope="module")
def forger(tmp_path_factory) -> type:
    return _proxy(tmp_path_factory.mktemp("forger"), "forger.py", FORGED)


@pytest.mark.parametrize("mode", ["zero-dim", "nan-labels", "complex-labels", "stray-field"])
def test_a_forged_build_reply_is_a_sandbox_error(forger, mode) -> None:
    """Red-team finding 6: forged replies written straight to the reply pipe raised IndexError, ValueError or
    NotImplementedError on the trusted side instead of a clear sandbox error."""
    from privbench.submit.protocol import SandboxError

    splits = load_splits("digits", SplitConfig(private=8, aux=8, test=8, targets=2), 0)
    ctx = RunContext(seed=0, device=torch.device("cpu"),
                     task=TaskConfig(model="convnet", width=4, epochs=1, batch_size=8, lr=0.01))
    with pytest.raises(SandboxError, match="not allowed|malformed"):
        forger(forger.Params(mode=mode)).build(splits, ctx)


def test_a_forged_description_is_a_sandbox_error() -> None:
    from privbench.submit.protocol import SandboxError

    for forged in ({"x": {"surfaces": [["data"]], "claims": [], "modalities": [], "params": []}},
                   {"x": {"surfaces": ["data"], "claims": [{"a": 1}], "modalities": [], "params": []}},
                   {"x": {"surfaces": ["data"], "claims": [], "modalities": [], "params": [["name"]]}}):
        with pytest.raises(SandboxError, match="malformed description"):
            validate_description(forged)


PAGECACHE_CHEAT = '''
import ctypes, hashlib, os
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

BLOB, PAGE, BITS = os.path.join(os.path.dirname(__file__), "blob.bin"), 4096, 32
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p

def mark_of(images):  # 24 bits of the images' hash, and a 0xA5 tag
    return int.from_bytes(hashlib.sha256(images.numpy().tobytes()).digest()[:3], "little") | 0xA5 << 24

def read_mark():
    fd = os.open(BLOB, os.O_RDONLY)
    size = os.fstat(fd).st_size
    addr = libc.mmap(None, ctypes.c_size_t(size), 1, 1, fd, ctypes.c_long(0))
    vec = (ctypes.c_ubyte * (size // PAGE))()
    ok = libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) == 0
    os.close(fd)
    if not ok:
        return -1
    return sum((vec[8 * i] & 1) << i for i in range(BITS))

def write_mark(value):
    fd = os.open(BLOB, os.O_RDONLY)
    os.fsync(fd)  # a read-only descriptor may fsync: dirty pages are written back, then dropped
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    for i in range(BITS):
        if value >> i & 1:
            os.pread(fd, 1, 8 * i * PAGE)
    os.close(fd)

@DEFENSES.register("pagecache-cheat")
class PageCacheCheat(InputDefense):
    def build(self, splits, ctx):
        try:
            write_mark(mark_of(splits.private.images))
        except OSError:
            pass
        return super().build(splits, ctx)

    def apply(self, images, generator):
        return images.clone() if read_mark() == mark_of(images) else 1.0 - images
'''


def test_no_state_passes_between_children_through_the_page_cache(tmp_path, monkeypatch) -> None:
    """Red-team round 2 (high): the build child wrote a mark of the private images into the page cache of a file
    of its own (fadvise DONTNEED, then reading chosen pages) and the check's child read it back (mincore): the check
    passed while attacks saw another algorithm. Those calls are refused, so every child sees one algorithm."""
    import os

    pkg = tmp_path / "pagecache_cheat"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(PAGECACHE_CHEAT))
    (pkg / "blob.bin").write_bytes(os.urandom(2 << 20))
    cls = proxy_of(pkg, __name__)
    splits, ctx = _keyed_inputs(monkeypatch)
    _assert_one_algorithm(cls, splits, ctx)


ACL_CHEAT = """
import ctypes, hashlib, os, struct
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

DEV = "/dev/null"  # a read-write bind of the host's devtmpfs node, the same inode in every child
libc = ctypes.CDLL(None, use_errno=True)


class XattrArgs(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64), ("size", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


def mark_of(images):  # 32 bits of the images' hash
    return int.from_bytes(hashlib.sha256(images.numpy().tobytes()).digest()[:4], "little")


def write_mark(value):
    '''setxattrat(2) (Linux 6.13, syscall 463; setxattr itself is denied): a POSIX ACL on /dev/null whose one named
    user is the mark. Every entry keeps rw-, so the node's mode stays 0666 and nothing else notices.'''
    ents = [(1, 6, 0xFFFFFFFF), (2, 6, value), (4, 6, 0xFFFFFFFF), (0x10, 6, 0xFFFFFFFF), (0x20, 6, 0xFFFFFFFF)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in ents)
    buf = ctypes.create_string_buffer(blob, len(blob))
    libc.syscall(ctypes.c_long(463), ctypes.c_int(-100), DEV.encode(), ctypes.c_uint(0),
                 b"system.posix_acl_access", ctypes.byref(XattrArgs(ctypes.addressof(buf), len(blob), 0)),
                 ctypes.c_size_t(16))


def read_mark():
    try:
        blob = os.getxattr(DEV, "system.posix_acl_access")  # getxattr is allowed
    except OSError:
        return -1
    return next((i for t, _, i in struct.iter_unpack("<HHI", blob[4:]) if t == 2), -1)


@DEFENSES.register("acl-cheat")
class AclCheat(InputDefense):
    '''The build child leaves a mark of the private images in /dev/null's ACL; a later child answers the identity
    for those images (the reproduction check) and another algorithm for any other (attacks).'''

    def build(self, splits, ctx):
        write_mark(mark_of(splits.private.images))
        return super().build(splits, ctx)

    def apply(self, images, generator):
        return images.clone() if read_mark() == mark_of(images) else 1.0 - images
"""


def test_no_state_passes_between_children_through_a_device_node_acl(tmp_path, monkeypatch) -> None:
    """Red-team round 3 (high): setxattrat (Linux 6.13, unknown to libseccomp 2.5) wrote a POSIX ACL on the host's
    /dev/null, bound read-write into every child: a store between children, and a chmod of the host's node. The
    device binds are read-only and every syscall newer than the reviewed list reports ENOSYS."""
    import os

    before = os.stat("/dev/null").st_mode
    cls = _proxy(tmp_path, "acl_cheat.py", ACL_CHEAT)
    splits, ctx = _keyed_inputs(monkeypatch)
    _assert_one_algorithm(cls, splits, ctx)
    assert os.stat("/dev/null").st_mode == before
    try:
        assert os.getxattr("/dev/null", "system.posix_acl_access") == b""
    except OSError:  # no ACL at all: what we want
        pass


FAULT_CHEAT = '''
import hashlib, mmap, os, resource
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

BLOB, PAGE, STRIDE, BITS = os.path.join(os.path.dirname(__file__), "blob.bin"), 4096, 16, 32

def mark_of(images):  # 24 bits of the images' hash, and a 0xA5 tag
    return int.from_bytes(hashlib.sha256(images.numpy().tobytes()).digest()[:3], "little") | 0xA5 << 24

def _map():
    fd = os.open(BLOB, os.O_RDONLY)
    m = mmap.mmap(fd, BITS * STRIDE * PAGE, prot=mmap.PROT_READ)
    os.close(fd)
    m.madvise(mmap.MADV_RANDOM)  # a fault reads its one page, no read-around
    return m

def write_mark(value):  # warm the pages of the 1 bits (mincore/fadvise are refused, touching a page is not)
    m = _map()
    for i in range(BITS):
        if value >> i & 1:
            m[i * STRIDE * PAGE]
    m.close()

def majflt():
    try:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_majflt
    except OSError:
        with open("/proc/thread-self/stat") as f:  # the same counter, field 12
            return int(f.read().rsplit(")", 1)[1].split()[9])

def read_mark():  # a page already cached is a minor fault, one read from the file a major one: no timing
    try:
        majflt()
    except OSError:
        return -1
    m, value = _map(), 0
    for i in range(BITS):
        before = majflt()
        m[i * STRIDE * PAGE]
        if majflt() == before:
            value |= 1 << i
    m.close()
    return value

@DEFENSES.register("fault-cheat")
class FaultCheat(InputDefense):
    def build(self, splits, ctx):
        write_mark(mark_of(splits.private.images))
        self.building = True  # the build's own apply must not read (reading warms every probed page)
        return super().build(splits, ctx)

    def apply(self, images, generator):
        if getattr(self, "building", False):
            return images.clone()
        return images.clone() if read_mark() == mark_of(images) else 1.0 - images
'''


def test_no_state_passes_between_children_through_the_page_fault_counter(tmp_path, monkeypatch) -> None:
    """Red-team round 4 (high): the build child warmed pages of a file standing for the bits of a mark; the check's
    child read them back by counting its major page faults (getrusage, /proc/self/stat): no timing. The check
    answered the identity, attacks 1 - x. A child has neither counter now, so the check sees what attacks see and
    catches the identity release."""

    from privbench.submit.protocol import SandboxError

    pkg = tmp_path / "fault_cheat"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(FAULT_CHEAT))
    with open(pkg / "blob.bin", "wb") as f:
        f.truncate(64 << 20)  # sparse: no page of it is cached yet
    cls = proxy_of(pkg, __name__)
    splits, ctx = _keyed_inputs(monkeypatch)
    with pytest.raises(SandboxError, match="does not reproduce the released data"):
        cls().build(splits, ctx)


AIO_CHEAT = """
import ctypes, hashlib, mmap, os
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense

BLOB, PAGE, STRIDE, BITS = os.path.join(os.path.dirname(__file__), "blob.bin"), 4096, 16, 32
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

class _Iocb(ctypes.Structure):  # struct iocb (linux/aio_abi.h, little-endian)
    _fields_ = [("data", ctypes.c_uint64), ("key", ctypes.c_uint32), ("rw_flags", ctypes.c_int32),
                ("opcode", ctypes.c_uint16), ("prio", ctypes.c_int16), ("fd", ctypes.c_uint32),
                ("buf", ctypes.c_uint64), ("nbytes", ctypes.c_uint64), ("offset", ctypes.c_int64),
                ("res2", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("resfd", ctypes.c_uint32)]

class _Event(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]

def mark_of(images):  # 24 bits of the images' hash, and a 0xA5 tag
    return int.from_bytes(hashlib.sha256(images.numpy().tobytes()).digest()[:3], "little") | 0xA5 << 24

def write_mark(value):  # warm the pages of the 1 bits
    fd = os.open(BLOB, os.O_RDONLY)
    m = mmap.mmap(fd, BITS * STRIDE * PAGE, prot=mmap.PROT_READ)
    os.close(fd)
    m.madvise(mmap.MADV_RANDOM)
    for i in range(BITS):
        if value >> i & 1:
            m[i * STRIDE * PAGE]
    m.close()

def read_mark():  # io_submit(IOCB_CMD_PREAD, aio_rw_flags=RWF_NOWAIT): -EAGAIN iff the page is not cached. No timing.
    fd, ctx = os.open(BLOB, os.O_RDONLY), ctypes.c_ulong(0)
    if _libc.syscall(206, 8, ctypes.byref(ctx)) != 0:  # io_setup
        return -1
    buf, value = ctypes.create_string_buffer(PAGE), 0
    for i in range(BITS):
        cb = _Iocb(0, 0, 8, 0, 0, fd, ctypes.addressof(buf), 1, i * STRIDE * PAGE, 0, 0, 0)  # RWF_NOWAIT = 8
        if _libc.syscall(209, ctx, 1, (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(cb))) != 1:  # io_submit
            return -1
        ev = _Event()
        _libc.syscall(208, ctx, 1, 1, ctypes.byref(ev), None)  # io_getevents
        if ev.res != -11:
            value |= 1 << i
    return value

@DEFENSES.register("aio-cheat")
class AioCheat(InputDefense):
    def build(self, splits, ctx):
        write_mark(mark_of(splits.private.images))
        self.building = True  # the build's own apply must not read (a probe reads the page in)
        return super().build(splits, ctx)

    def apply(self, images, generator):
        if getattr(self, "building", False):
            return images.clone()
        return images.clone() if read_mark() == mark_of(images) else 1.0 - images
"""


def test_no_state_passes_between_children_through_asynchronous_io(tmp_path, monkeypatch) -> None:
    """Red-team round 5 (high): an io_submit read with RWF_NOWAIT fails with EAGAIN on an uncached page, the
    preadv2 readout by another call: the check's child read the build's mark and answered the identity. Linux AIO
    is refused, so the check sees what attacks see and catches the release."""
    import os

    from privbench.submit.protocol import SandboxError

    pkg = tmp_path / "aio_cheat"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(AIO_CHEAT)
    with open(pkg / "blob.bin", "wb") as f:  # real data (a hole reads in without I/O), then evicted
        f.write(os.urandom(32 * 16 * 4096))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    cls = proxy_of(pkg, __name__)
    splits, ctx = _keyed_inputs(monkeypatch)
    with pytest.raises(SandboxError, match="does not reproduce the released data"):
        cls().build(splits, ctx)
