#!/usr/bin/env python3
"""vhost-user-blk back-end against a scripted front-end (TAP).

  vu_protocol.py --fdvm PATH        `fdvm serve blk` (every part)
  vu_protocol.py --backend qsd      qemu-storage-daemon (happy path and the
                                    protocol details only, for comparison)

Parts:
  happy     full handshakes (memory table or ADD_MEM_REG, one region or two
            with a hole, event index, indirect descriptors, a second memory
            table while the ring runs), write/read/flush, image checked on
            the host, GET_VRING_BASE.
  hostile   (fdvm only) one bad front-end per case; each must get an error
            ack or a dropped connection in time, then the daemon must still
            be alive and serve a new connection's happy path.
  protocol  GET_VRING_BASE stops the ring, RESET_DEVICE, SET/GET_STATUS,
            GET_INFLIGHT_FD, one connection at a time.
  teardown  SIGTERM/SIGINT: exit status 0 and the socket removed.
"""

import argparse
import mmap
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vu_client import *  # noqa: E402,F401,F403
import vu_client as vu  # noqa: E402

MiB = 1 << 20
KiB = 1 << 10
IMAGE_SIZE = 8 * MiB
REPLY_TIMEOUT = 3.0       # one message's reply
OUTCOME_TIMEOUT = 3.0     # a hostile case's error ack or drop
IO_TIMEOUT = 5.0          # one batch of requests

WANT_FEATURES = (bit(F_VERSION_1) | bit(F_PROTOCOL_FEATURES) | bit(BLK_F_SEG_MAX) |
                 bit(BLK_F_BLK_SIZE) | bit(BLK_F_FLUSH) | bit(BLK_F_RO) | bit(BLK_F_MQ) |
                 bit(BLK_F_SIZE_MAX))
WANT_PF = (bit(PF_MQ) | bit(PF_REPLY_ACK) | bit(PF_CONFIG) | bit(PF_INFLIGHT_SHMFD) |
           bit(PF_RESET_DEVICE) | bit(PF_CONFIGURE_MEM_SLOTS) | bit(PF_STATUS))

# Guest memory layouts: (gpa, size) per region.
ONE = [(0, 4 * MiB)]
SPLIT = [(0, 2 * MiB), (0x100000000, 2 * MiB)]          # a VM with a hole below 4 GiB
SPLIT3 = [(0, 2 * MiB), (0x100000000, 2 * MiB), (0x200000000, 2 * MiB)]


class Fail(Exception):
    pass


class NotOffered(Exception):
    """A feature the test needs is not offered: a failure for fdvm, which
    promises it, a skip for qemu-storage-daemon."""


BACKEND = ['fdvm']


def need(cond, what):
    if not cond:
        raise NotOffered(what)


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def pattern(seed, n):
    """Deterministic bytes, different per seed and per 512-byte sector."""
    out = bytearray()
    s = seed * 0x9E3779B97F4A7C15 & (2**64 - 1)
    while len(out) < n:
        s = (s * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        out += struct.pack('<Q', s ^ (s >> 29))
    return bytes(out[:n])


# --- The daemon ------------------------------------------------------------

class Backend:
    def __init__(self, kind, exe, tmp, image, opts='', name='vu'):
        self.kind, self.exe, self.image, self.opts = kind, exe, image, opts
        self.sock = os.path.join(tmp, name + '.sock')
        self.logpath = os.path.join(tmp, name + '.log')
        self.proc = None
        self.first_connect_error = None

    def argv(self):
        if self.kind == 'fdvm':
            return [self.exe, 'serve', 'blk', '--socket', self.sock, self.image + self.opts]
        return [self.exe, '--blockdev',
                'driver=file,node-name=f,filename=%s' % self.image,
                '--export', 'type=vhost-user-blk,id=e,node-name=f,addr.type=unix,'
                'addr.path=%s,writable=%s' % (self.sock, 'off' if ',ro' in self.opts else 'on')]

    def start(self, timeout=10.0):
        self.log = open(self.logpath, 'ab')
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                raise Fail('%s exited with %s before listening: %s' % (
                    self.kind, self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise Fail('%s: no socket after %.0fs' % (self.kind, timeout))
            time.sleep(0.01)
        # The contract: the path appears only once it is listening.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
        except OSError as e:
            self.first_connect_error = str(e)
        finally:
            s.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        if self.alive():
            return 'alive'
        rc = self.proc.returncode
        if rc < 0:
            return 'died of signal %s' % signal.Signals(-rc).name
        return 'exited with status %d' % rc

    def fds(self):
        try:
            return sorted(os.readlink('/proc/%d/fd/%s' % (self.proc.pid, f))
                          for f in os.listdir('/proc/%d/fd' % self.proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            return []

    def memfd_maps(self):
        try:
            with open('/proc/%d/maps' % self.proc.pid) as f:
                return [l.strip() for l in f if 'memfd:vu-' in l]
        except FileNotFoundError:
            return []

    def log_tail(self, n=3):
        try:
            with open(self.logpath, 'rb') as f:
                lines = f.read().decode(errors='replace').strip().splitlines()
            return ' | '.join(lines[-n:])
        except FileNotFoundError:
            return ''

    def log_size(self):
        try:
            return os.path.getsize(self.logpath)
        except FileNotFoundError:
            return 0

    def log_since(self, pos):
        with open(self.logpath, 'rb') as f:
            f.seek(pos)
            return f.read().decode(errors='replace').strip().splitlines()

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal, wait; returns (exit code or None if it had to be killed, socket removed)."""
        if self.proc is None:
            return None, True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.log.close()
                return None, not os.path.exists(self.sock)
        self.log.close()
        return self.proc.returncode, not os.path.exists(self.sock)


# --- A front-end session ---------------------------------------------------

class Session:
    """One connection configured step by step."""

    def __init__(self, backend, layout=ONE, timeout=REPLY_TIMEOUT):
        self.b = backend
        self.conn = Conn(backend.sock, timeout)
        self.mem = GuestMemory(layout)
        self.vqs = []
        self.features = self.acked = self.pf = self.acked_pf = 0
        self.config = b''

    def close(self):
        self.conn.close()
        for q in self.vqs:
            q.close()
        self.mem.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def reply_ack(self):
        return bool(self.acked_pf & bit(PF_REPLY_ACK))

    def negotiate(self, event_idx=False, indirect=False, qemu_order=True, pf_extra=0):
        c = self.conn
        self.features = c.get_u64(GET_FEATURES)
        check(self.features & bit(F_VERSION_1), 'VERSION_1 not offered: %#x' % self.features)
        check(self.features & bit(F_PROTOCOL_FEATURES),
              'PROTOCOL_FEATURES not offered: %#x' % self.features)
        want = WANT_FEATURES
        if event_idx:
            check(self.features & bit(F_EVENT_IDX), 'EVENT_IDX not offered')
            want |= bit(F_EVENT_IDX)
        if indirect:
            check(self.features & bit(F_INDIRECT_DESC), 'INDIRECT_DESC not offered')
            want |= bit(F_INDIRECT_DESC)
        self.acked = self.features & want
        if not qemu_order:
            c.set_u64(SET_FEATURES, self.acked)
        self.pf = c.get_u64(GET_PROTOCOL_FEATURES)
        self.acked_pf = self.pf & (WANT_PF | pf_extra)
        c.set_u64(SET_PROTOCOL_FEATURES, self.acked_pf)
        if qemu_order:
            ack = c.set_u64(SET_FEATURES, self.acked, self.reply_ack)
            check(not ack, 'SET_FEATURES acked %r' % ack)
        return self

    def queue_num(self):
        return self.conn.get_u64(GET_QUEUE_NUM)

    def get_config(self, size=60):
        p = self.conn.get_config(0, size)
        check(len(p) == 12 + size, 'GET_CONFIG reply payload of %d bytes for %d asked (+12)'
              % (len(p), size))
        off, sz, _ = struct.unpack_from('<III', p)
        check((off, sz) == (0, size), 'GET_CONFIG reply header offset %d size %d' % (off, sz))
        self.config = p[12:]
        return self.config

    def set_mem_table(self, regions=None, fds=None):
        regions = self.mem.table() if regions is None else regions
        fds = [self.mem.fd] * len(regions) if fds is None else fds
        return self.conn.request(SET_MEM_TABLE, mem_table_payload(regions), fds, self.reply_ack)

    def add_mem_reg(self, region):
        return self.conn.request(ADD_MEM_REG, single_region_payload(*region), [self.mem.fd],
                                 self.reply_ack)

    def add_vq(self, index=0, size=256, region=0):
        q = VirtQueue(self.mem, index, size, region,
                      event_idx=bool(self.acked & bit(F_EVENT_IDX)),
                      indirect=bool(self.acked & bit(F_INDIRECT_DESC)))
        self.vqs.append(q)
        return q

    def start_vq(self, q, base=0):
        acks = q.setup(self.conn, self.reply_ack, base)
        check(all(not a for a in acks), 'ring set-up acks %r (0 expected)' % acks)

    def seg_max(self):
        if self.acked & bit(BLK_F_SEG_MAX) and len(self.config) >= 16:
            return struct.unpack_from('<I', self.config, 12)[0]
        return 1 << 30


def setup_session(b, layout=ONE, ring_region=0, event_idx=False, indirect=False,
                  memmode='table', qemu_order=True, table_regions=None):
    """A connection with the memory table set and ring 0 running."""
    s = Session(b, layout)
    try:
        s.negotiate(event_idx, indirect, qemu_order)
        if s.acked_pf & bit(PF_CONFIG):
            s.get_config()
        if memmode == 'table':
            ack = s.set_mem_table(table_regions)
            check(not ack, 'SET_MEM_TABLE acked %r' % ack)
        else:
            need(s.acked_pf & bit(PF_CONFIGURE_MEM_SLOTS), 'CONFIGURE_MEM_SLOTS not offered')
            slots = s.conn.get_u64(GET_MAX_MEM_SLOTS)
            check(slots >= len(layout), 'GET_MAX_MEM_SLOTS %d' % slots)
            for r in s.mem.table():
                ack = s.add_mem_reg(r)
                check(not ack, 'ADD_MEM_REG %r acked %r' % (r, ack))
        q = s.add_vq(0, 256, ring_region)
        s.start_vq(q)
        return s, q
    except BaseException:
        s.close()
        raise


def blk_io(s, q, sector, data, seg_lengths, data_regions=(0,), timeout=IO_TIMEOUT,
           per_req=64 * KiB):
    """Write data at sector in requests of per_req bytes, each cut in
    seg_lengths; then read it back with another segmentation; compare."""
    d = BlkDriver(q)
    regs = list(data_regions)
    seg_max = s.seg_max()
    seg_lengths = list(seg_lengths)
    # writes
    reqs = []
    for k, pos in enumerate(range(0, len(data), per_req)):
        chunk = data[pos:pos + per_req]
        lens = cut(len(chunk), seg_lengths, seg_max)
        reqs.append(d.request(T_OUT, sector + pos // 512, chunk, lens,
                              seg_region=regs[k % len(regs)]))
    res = d.run(reqs, timeout)
    for r, ln, st in res:
        check(st == S_OK, 'write at sector %d: status %d' % (r.sector, st))
        check(ln == 1, 'write at sector %d: used len %d, expected 1 (the status byte)'
              % (r.sector, ln))
    d.reset()
    # reads, segmented differently
    rlens = list(reversed(seg_lengths)) if len(seg_lengths) > 1 else [per_req // 2, per_req // 2]
    reqs = []
    for k, pos in enumerate(range(0, len(data), per_req)):
        n = min(per_req, len(data) - pos)
        reqs.append(d.request(T_IN, sector + pos // 512, None, cut(n, rlens, seg_max),
                              seg_region=regs[(k + 1) % len(regs)]))
    res = d.run(reqs, timeout)
    got = b''
    for r, ln, st in res:
        check(st == S_OK, 'read at sector %d: status %d' % (r.sector, st))
        n = sum(x for _, x in r.data)
        check(ln == n + 1, 'read at sector %d: used len %d, expected %d' % (r.sector, ln, n + 1))
        got += d.read_data(r)
    d.reset()
    if got != data:
        first = next(i for i in range(len(data)) if got[i] != data[i])
        raise Fail('read back differs from what was written, first at byte %d' % first)
    return len(res) * 2


def cut(n, lengths, seg_max):
    """Cut n bytes in pieces following lengths (cycled), at most seg_max pieces."""
    out, left, i = [], n, 0
    while left:
        x = min(lengths[i % len(lengths)], left)
        if len(out) + 1 == seg_max:
            x = left
        out.append(x)
        left -= x
        i += 1
    return out


def flush(q, timeout=IO_TIMEOUT):
    d = BlkDriver(q)
    res = d.run([d.request(T_FLUSH, 0)], timeout)
    d.reset()
    return res[0][2]


def image_bytes(image, offset, n):
    with open(image, 'rb') as f:
        f.seek(offset)
        return f.read(n)


def happy(b, layout=ONE, ring_region=0, data_regions=(0,), event_idx=False, indirect=False,
          memmode='table', qemu_order=True, nbytes=384 * KiB, sector=2048, seed=1,
          seg_lengths=(4096, 12288, 16384, 32768), remap=None, close=True):
    """The whole happy path; returns a note. remap: (table_regions_first, regions_after)."""
    table_first = remap[0] if remap else None
    s, q = setup_session(b, layout, ring_region, event_idx, indirect, memmode, qemu_order,
                         table_first)
    try:
        c = s.conn
        notes = []
        if s.acked_pf & bit(PF_MQ):
            nq = s.queue_num()
            check(nq >= 1, 'GET_QUEUE_NUM %d' % nq)
        if s.acked_pf & bit(PF_CONFIG):
            check(len(s.config) == 60, 'GET_CONFIG reply of %d bytes for 60 asked'
                  % len(s.config))
            cap = struct.unpack_from('<Q', s.config, 0)[0]
            check(cap == IMAGE_SIZE // 512, 'capacity %d, image has %d sectors'
                  % (cap, IMAGE_SIZE // 512))
        data = pattern(seed, nbytes)
        nreq = blk_io(s, q, sector, data, seg_lengths, data_regions)
        if remap:
            ack = s.set_mem_table(remap[1])
            check(not ack, 'second SET_MEM_TABLE acked %r' % ack)
            data2 = pattern(seed + 100, 128 * KiB)
            nreq += blk_io(s, q, sector + nbytes // 512, data2, seg_lengths,
                           data_regions=(len(remap[1]) - 1,))
            data += data2
            notes.append('I/O after the second memory table')
        if s.acked & bit(BLK_F_FLUSH):
            st = flush(q)
            check(st == S_OK, 'flush status %d' % st)
            nreq += 1
        host = image_bytes(b.image, sector * 512, len(data))
        check(host == data, 'the image file on the host does not hold the written bytes')
        idx, num = c.get_vring_base(0)
        check(idx == 0 and num == nreq, 'GET_VRING_BASE -> (%d, %d), expected (0, %d)'
              % (idx, num, nreq))
        notes.append('%d requests, features %#x, protocol features %#x'
                     % (nreq, s.acked, s.acked_pf))
        return '; '.join(notes)
    finally:
        if close:
            s.close()


def quick_happy(b, seed=7):
    """A shorter happy path for after each hostile case."""
    return happy(b, nbytes=64 * KiB, sector=4096, seed=seed, seg_lengths=(8192, 24576))


# --- TAP -------------------------------------------------------------------

class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def result(self, ok, name, diag=None, directive=''):
        self.n += 1
        if not ok:
            self.failed += 1
        print('%s %d - %s%s' % ('ok' if ok else 'not ok', self.n, name,
                                ' # ' + directive if directive else ''), flush=True)
        if diag:
            for line in str(diag).splitlines():
                print('# ' + line, flush=True)

    def skip(self, name, why):
        self.result(True, name, directive='SKIP ' + why)

    def run(self, name, fn, *a, **kw):
        t0 = time.monotonic()
        try:
            note = fn(*a, **kw)
            self.result(True, name, note if isinstance(note, str) else None)
            return True
        except NotOffered as e:
            if BACKEND[0] != 'fdvm':
                self.skip(name, '%s by %s' % (e, BACKEND[0]))
                return None
            self.result(False, name, 'NotOffered: %s' % e)
            return False
        except Exception as e:  # noqa: BLE001
            msg = '%s: %s' % (type(e).__name__, e)
            if not isinstance(e, (Fail, vu.Timeout, vu.Closed, vu.ProtocolError)):
                msg += '\n' + traceback.format_exc()
            self.result(False, name, '%s (after %.1fs)' % (msg, time.monotonic() - t0))
            return False

    def plan(self):
        print('1..%d' % self.n, flush=True)


# --- Hostile cases ---------------------------------------------------------

def expect_refusal(conn, what, timeout=OUTCOME_TIMEOUT, allow_reply_of=None):
    """The back-end must answer an error ack (non-zero u64) or drop us."""
    kind, r = conn.outcome(timeout)
    if kind == 'closed':
        return 'dropped (%s)' % r
    if kind == 'timeout':
        raise Fail('%s: no error reply and no drop in %.0fs (hang)' % (what, timeout))
    r.close_fds()
    if r.flags & FLAG_REPLY and len(r.payload) == 8:
        v = struct.unpack('<Q', r.payload)[0]
        if allow_reply_of is None or r.request == allow_reply_of:
            if v != 0:
                return 'error ack %#x' % v
            raise Fail('%s: acked 0 (accepted)' % what)
    raise Fail('%s: unexpected reply %r' % (what, r))


def expect_drop(conn, hang, answered, timeout=OUTCOME_TIMEOUT):
    """A request that has no good answer: the back-end must drop us. hang is
    the failure message for no reply; answered(r) the one for a reply."""
    kind, r = conn.outcome(timeout)
    if kind == 'closed':
        return 'dropped'
    if kind == 'timeout':
        raise Fail(hang)
    r.close_fds()
    raise Fail(answered(r))


def send_expect_refusal(s, what, request, payload=b'', fds=(), need_reply=True,
                        allow_reply_of=None, **kw):
    try:
        s.conn.send(request, payload, fds, need_reply, **kw)
    except vu.Closed as e:
        return 'dropped while sending (%s)' % e
    return expect_refusal(s.conn, what, allow_reply_of=allow_reply_of)


def base_session(b, layout=ONE, memtable=True):
    s = Session(b, layout)
    s.negotiate()
    check(s.reply_ack, 'REPLY_ACK not offered; hostile cases need it')
    if memtable:
        ack = s.set_mem_table()
        check(not ack, 'SET_MEM_TABLE acked %r' % ack)
    return s


def h_short_payload(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_FEATURES with 4 payload bytes', SET_FEATURES,
                                   struct.pack('<I', 1 << 0))


def h_long_payload(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_FEATURES with 16 payload bytes', SET_FEATURES,
                                   struct.pack('<QQ', s.acked, 0))


def h_vring_state_short(b):
    with base_session(b) as s:
        return send_expect_refusal(s, 'SET_VRING_NUM with 4 bytes', SET_VRING_NUM,
                                   struct.pack('<I', 0))


def h_vring_addr_short(b):
    with base_session(b) as s:
        q = s.add_vq()
        return send_expect_refusal(s, 'SET_VRING_ADDR missing the log field', SET_VRING_ADDR,
                                   q.addr_payload()[:-8])


def h_huge_size(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'header size 0xffffffff', SET_FEATURES,
                                   struct.pack('<Q', s.acked), size=0xffffffff)


def h_size_beyond_max(b):
    with base_session(b, memtable=False) as s:
        # a size past any message's payload, with all the bytes really sent
        return send_expect_refusal(s, 'SET_MEM_TABLE with 4096+8 payload bytes', SET_MEM_TABLE,
                                   struct.pack('<II', 1, 0) + bytes(4096), [s.mem.fd])


def h_memtable_payload_short(b):
    with base_session(b, SPLIT, memtable=False) as s:
        t = s.mem.table()
        return send_expect_refusal(s, 'SET_MEM_TABLE nregions 2, one region sent',
                                   SET_MEM_TABLE, mem_table_payload(t[:1], nregions=2),
                                   [s.mem.fd, s.mem.fd])


def h_memtable_fewer_fds(b):
    with base_session(b, SPLIT, memtable=False) as s:
        return send_expect_refusal(s, 'SET_MEM_TABLE 2 regions 1 fd', SET_MEM_TABLE,
                                   mem_table_payload(s.mem.table()), [s.mem.fd])


def h_memtable_no_fds(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_MEM_TABLE without fds', SET_MEM_TABLE,
                                   mem_table_payload(s.mem.table()), [])


def h_memtable_more_fds(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_MEM_TABLE 1 region 3 fds', SET_MEM_TABLE,
                                   mem_table_payload(s.mem.table()), [s.mem.fd] * 3)


def h_kick_no_fd(b):
    with base_session(b) as s:
        q = s.add_vq()
        s.conn.vring_state(SET_VRING_NUM, 0, q.size)
        s.conn.request(SET_VRING_ADDR, q.addr_payload())
        return send_expect_refusal(s, 'SET_VRING_KICK without fd or NOFD flag', SET_VRING_KICK,
                                   struct.pack('<Q', 0))


def h_call_no_fd(b):
    with base_session(b) as s:
        return send_expect_refusal(s, 'SET_VRING_CALL without fd or NOFD flag', SET_VRING_CALL,
                                   struct.pack('<Q', 0))


def h_get_features_fds(b):
    with base_session(b, memtable=False) as s:
        fd = os.eventfd(0)
        try:
            s.conn.send(GET_FEATURES, b'', [fd, fd])
        finally:
            os.close(fd)
        return expect_drop(s.conn, 'GET_FEATURES with 2 fds: no reply and no drop (hang)',
                           lambda r: 'GET_FEATURES with 2 fds: answered %r (the fds were accepted)' % r)


def h_set_features_fd(b):
    with base_session(b, memtable=False) as s:
        fd = os.eventfd(0)
        try:
            return send_expect_refusal(s, 'SET_FEATURES with an fd', SET_FEATURES,
                                       struct.pack('<Q', s.acked), [fd])
        finally:
            os.close(fd)


def h_bad_version(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'GET_FEATURES with version 2', GET_FEATURES,
                                   flags=0x2 | FLAG_NEED_REPLY, allow_reply_of=-1)


def table_case(what, regions, nfds=None, layout=ONE, fd_of=None):
    def fn(b):
        with base_session(b, layout, memtable=False) as s:
            fds = fd_of(s) if fd_of else [s.mem.fd] * (len(regions) if nfds is None else nfds)
            return send_expect_refusal(s, what, SET_MEM_TABLE, mem_table_payload(regions), fds)
    return fn


U = 0x7f0000000000


def h_region_past_memfd(b):
    """Region bigger than its memfd: refuse at SET_MEM_TABLE. If it is
    accepted, put the ring there and kick, to show the SIGBUS."""
    with base_session(b, [(0, 1 * MiB)], memtable=False) as s:
        regions = [(0, 2 * MiB, U, 0)]
        s.conn.send(SET_MEM_TABLE, mem_table_payload(regions), [s.mem.fd], True)
        kind, r = s.conn.outcome(OUTCOME_TIMEOUT)
        if kind == 'closed':
            return 'dropped'
        if kind == 'timeout':
            raise Fail('no reply and no drop (hang)')
        v = r.u64()
        if v:
            return 'error ack %#x' % v
        # accepted: ring in the part past the end of the file
        s.conn.vring_state(SET_VRING_NUM, 0, 256)
        s.conn.request(SET_VRING_ADDR, struct.pack('<IIQQQQ', 0, 0, U + 0x180000,
                                                   U + 0x190000, U + 0x188000, 0))
        kfd = os.eventfd(0)
        cfd = os.eventfd(0)
        s.conn.set_u64(SET_VRING_KICK, 0, fds=[kfd])
        s.conn.set_u64(SET_VRING_CALL, 0, fds=[cfd])
        s.conn.vring_state(SET_VRING_ENABLE, 0, 1)
        os.eventfd_write(kfd, 1)
        time.sleep(0.5)
        os.close(kfd)
        os.close(cfd)
        raise Fail('SET_MEM_TABLE with a 2 MiB region on a 1 MiB memfd acked 0; after a kick '
                   'on a ring placed past the file end the daemon is %s' % b.status())


def h_eventfd_region(b):
    with base_session(b, memtable=False) as s:
        fd = os.eventfd(0)
        try:
            return send_expect_refusal(s, 'an eventfd as memory', SET_MEM_TABLE,
                                       mem_table_payload([(0, 2 * MiB, U, 0)]), [fd])
        finally:
            os.close(fd)


def h_too_many_regions(b):
    with base_session(b, [(0, 9 * 64 * KiB)], memtable=False) as s:
        regions = [(i * 0x100000, 64 * KiB, U + i * 0x100000, i * 64 * KiB) for i in range(9)]
        return send_expect_refusal(s, 'SET_MEM_TABLE with 9 regions', SET_MEM_TABLE,
                                   mem_table_payload(regions), [s.mem.fd] * 9)


def h_nregions_huge(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_MEM_TABLE nregions 0xffffffff', SET_MEM_TABLE,
                                   mem_table_payload(s.mem.table(), nregions=0xffffffff),
                                   [s.mem.fd])


def h_nregions_zero(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_MEM_TABLE nregions 0 with one region and fd',
                                   SET_MEM_TABLE, mem_table_payload(s.mem.table(), nregions=0),
                                   [s.mem.fd])


def ring_case(what, mutate):
    """Memory table and SET_VRING_NUM set, then a ring message made bad by
    mutate(s, q) -> (req, payload, fds). If it is acked 0, the rest of the
    ring set-up follows (a back-end may check at ring start): an error ack
    or a drop at any step passes; all acked 0 fails."""
    def fn(b):
        with base_session(b, SPLIT) as s:
            q = s.add_vq(0, 256, 0)
            req, payload, fds = mutate(s, q)
            if req != SET_VRING_NUM:
                ack = s.conn.vring_state(SET_VRING_NUM, 0, q.size, True)
                check(ack == 0, 'SET_VRING_NUM 256 acked %r' % ack)
            try:
                return send_expect_refusal(s, what, req, payload, fds)
            except Fail as e:
                if 'acked 0' not in str(e) or req not in (SET_VRING_ADDR, SET_VRING_NUM,
                                                          SET_VRING_BASE):
                    raise
            return rest_of_ring_setup(b, s, q, what, req, payload)
    return fn


def rest_of_ring_setup(b, s, q, what, bad_req, bad_payload):
    c = s.conn
    steps = [('SET_VRING_NUM', SET_VRING_NUM, struct.pack('<II', 0, q.size), []),
             ('SET_VRING_BASE', SET_VRING_BASE, struct.pack('<II', 0, 0), []),
             ('SET_VRING_ADDR', SET_VRING_ADDR, q.addr_payload(), []),
             ('SET_VRING_KICK', SET_VRING_KICK, struct.pack('<Q', 0), [q.kick_fd]),
             ('SET_VRING_CALL', SET_VRING_CALL, struct.pack('<Q', 0), [q.call_fd]),
             ('SET_VRING_ENABLE', SET_VRING_ENABLE, struct.pack('<II', 0, 1), [])]
    accepted = [msg_name(bad_req) + ' (the bad one)']
    for name, req, payload, fds in steps:
        if req == bad_req:
            continue
        try:
            c.send(req, payload, fds, True)
        except vu.Closed:
            return 'dropped at %s (after %s acked 0)' % (name, ', '.join(accepted))
        kind, r = c.outcome(OUTCOME_TIMEOUT)
        if kind == 'closed':
            return 'dropped at %s (after %s acked 0)' % (name, ', '.join(accepted))
        if kind == 'timeout':
            raise Fail('%s: no reply to %s (hang)' % (what, name))
        v = r.u64()
        if v:
            return 'error ack %#x at %s (after %s acked 0)' % (v, name, ', '.join(accepted))
        accepted.append(name)
    q.kick(force=True)
    time.sleep(0.3)
    raise Fail('%s: acked 0 and so was the rest of the ring set-up (%s); kicked: %s'
               % (what, ', '.join(accepted), 'used idx %d' % q.used_idx()))


def vring_addr(q, desc=None, used=None, avail=None, index=None):
    p = q.addr_payload(desc=desc, used=used, avail=avail)
    if index is not None:
        p = struct.pack('<I', index) + p[4:]
    return p


def h_rings_before_table(b):
    """SET_VRING_NUM/ADDR/KICK before any memory table, then a kick."""
    with base_session(b, memtable=False) as s:
        q = s.add_vq()
        c = s.conn
        steps = [('SET_VRING_NUM', SET_VRING_NUM, struct.pack('<II', 0, q.size), []),
                 ('SET_VRING_ADDR', SET_VRING_ADDR, q.addr_payload(), []),
                 ('SET_VRING_BASE', SET_VRING_BASE, struct.pack('<II', 0, 0), []),
                 ('SET_VRING_KICK', SET_VRING_KICK, struct.pack('<Q', 0), [q.kick_fd]),
                 ('SET_VRING_CALL', SET_VRING_CALL, struct.pack('<Q', 0), [q.call_fd]),
                 ('SET_VRING_ENABLE', SET_VRING_ENABLE, struct.pack('<II', 0, 1), [])]
        accepted = []
        for name, req, payload, fds in steps:
            try:
                c.send(req, payload, fds, True)
            except vu.Closed:
                return 'dropped at %s (after %s accepted)' % (name, accepted)
            kind, r = c.outcome(OUTCOME_TIMEOUT)
            if kind == 'closed':
                return 'dropped at %s (after %s accepted)' % (name, accepted)
            if kind == 'timeout':
                raise Fail('%s before the memory table: no reply (hang)' % name)
            v = r.u64()
            if v:
                return 'error ack %#x at %s (after %s accepted)' % (v, name, accepted)
            accepted.append(name)
        os.eventfd_write(q.kick_fd, 1)
        time.sleep(0.3)
        # one more message to see whether the session is still usable
        kind, r = c.outcome(0.2)
        raise Fail('every ring message before the memory table was acked 0 (%s); kicked; '
                   'daemon %s' % (', '.join(accepted), b.status()))


def h_table_after_ring_break(b):
    """A running ring, then a memory table that no longer holds the ring."""
    with base_session(b, SPLIT) as s:
        q = s.add_vq(0, 256, 1)
        s.start_vq(q)
        return send_expect_refusal(
            s, 'SET_MEM_TABLE without the region holding the running ring', SET_MEM_TABLE,
            mem_table_payload(s.mem.table()[:1]), [s.mem.fd])


def h_unknown(num):
    def fn(b):
        with base_session(b, memtable=False) as s:
            return send_expect_refusal(s, 'request %d' % num, num, struct.pack('<Q', 0),
                                       allow_reply_of=None)
    return fn


def then_close(what, make):
    """A case: make(s) -> (bytes, fds) sent raw on a negotiated session,
    then the socket closed mid-message (the runner then checks that the
    daemon lives and serves the next connection)."""
    def fn(b):
        s = base_session(b, memtable=False)
        try:
            data, fds = make(s)
            s.conn.send_raw(data, fds)
        finally:
            s.close()
        time.sleep(0.2)
        return what
    return fn


def half_mem_table(s):
    p = mem_table_payload(s.mem.table())
    return HDR.pack(SET_MEM_TABLE, VERSION | FLAG_NEED_REPLY, len(p)) + p[:len(p) // 2], [s.mem.fd]


def h_close_with_running_ring(b):
    s, q = setup_session(b, SPLIT, ring_region=1)
    try:
        d = BlkDriver(q)
        reqs = [d.request(T_IN, 0, None, [4096])]
        q.submit([c for _, c in reqs])
    finally:
        s.close()
    time.sleep(0.2)
    return 'closed with a request in flight and the memory unmapped here'


def h_kick_pipe(b):
    with base_session(b) as s:
        rfd, wfd = os.pipe()
        try:
            s.conn.vring_state(SET_VRING_NUM, 0, 256)
            return send_expect_refusal(s, 'SET_VRING_KICK with a pipe', SET_VRING_KICK,
                                       struct.pack('<Q', 0), [rfd])
        finally:
            os.close(rfd)
            os.close(wfd)


def h_set_config_short(b):
    with base_session(b, memtable=False) as s:
        need(s.acked_pf & bit(PF_CONFIG), 'CONFIG not offered')
        return send_expect_refusal(s, 'SET_CONFIG size 60 with 4 config bytes', SET_CONFIG,
                                   struct.pack('<III', 0, 60, 0) + bytes(4))


def h_set_config_outside(b):
    with base_session(b, memtable=False) as s:
        need(s.acked_pf & bit(PF_CONFIG), 'CONFIG not offered')
        return send_expect_refusal(s, 'SET_CONFIG at offset 0xfffffff0', SET_CONFIG,
                                   struct.pack('<III', 0xfffffff0, 16, 0) + bytes(16))


def h_get_config_short(b):
    """GET_CONFIG whose size field says more than the payload holds: the
    error is a reply with size 0 (spec), or a drop."""
    with base_session(b, memtable=False) as s:
        need(s.acked_pf & bit(PF_CONFIG), 'CONFIG not offered')
        s.conn.send(GET_CONFIG, struct.pack('<III', 0, 60, 0))
        kind, r = s.conn.outcome(OUTCOME_TIMEOUT)
        if kind == 'closed':
            return 'dropped'
        if kind == 'timeout':
            raise Fail('no reply and no drop (hang)')
        if len(r.payload) <= 12 and (len(r.payload) < 8 or
                                     struct.unpack_from('<I', r.payload, 4)[0] == 0):
            return 'error reply (config size 0)'
        raise Fail('GET_CONFIG with size 60 and no config bytes answered with %d bytes'
                   % len(r.payload))


def h_get_config_huge(b):
    with base_session(b, memtable=False) as s:
        need(s.acked_pf & bit(PF_CONFIG), 'CONFIG not offered')
        s.conn.send(GET_CONFIG, struct.pack('<III', 0xffffff00, 0x100, 0) + bytes(0x100))
        kind, r = s.conn.outcome(OUTCOME_TIMEOUT)
        if kind == 'closed':
            return 'dropped'
        if kind == 'timeout':
            raise Fail('no reply and no drop (hang)')
        if len(r.payload) == 12 and struct.unpack_from('<I', r.payload, 4)[0] == 0:
            return 'error reply (config size 0)'
        raise Fail('GET_CONFIG at offset 0xffffff00 answered with %d bytes' % len(r.payload))


def h_features_not_offered(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_FEATURES with LOG_ALL and ACCESS_PLATFORM',
                                   SET_FEATURES,
                                   struct.pack('<Q', s.acked | 1 << 26 | 1 << 33))


def h_pf_not_offered(b):
    with base_session(b, memtable=False) as s:
        return send_expect_refusal(s, 'SET_PROTOCOL_FEATURES with LOG_SHMFD and PAGEFAULT',
                                   SET_PROTOCOL_FEATURES,
                                   struct.pack('<Q', s.acked_pf | 1 << 1 | 1 << 8))


def h_set_log_base(b):
    with base_session(b) as s:
        fd = os.memfd_create('vu-log', os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, 4096)
            return send_expect_refusal(s, 'SET_LOG_BASE (LOG_SHMFD not offered)', SET_LOG_BASE,
                                       struct.pack('<QQ', 4096, 0), [fd])
        finally:
            os.close(fd)


def addreg_session(b, layout=SPLIT):
    s = base_session(b, layout, memtable=False)
    need(s.acked_pf & bit(PF_CONFIGURE_MEM_SLOTS), 'CONFIGURE_MEM_SLOTS not offered')
    return s


def h_addreg_overlap(b):
    with addreg_session(b) as s:
        r0 = s.mem.table()[0]
        check(s.add_mem_reg(r0) == 0, 'first ADD_MEM_REG refused')
        return send_expect_refusal(s, 'ADD_MEM_REG overlapping the first', ADD_MEM_REG,
                                   single_region_payload(r0[0] + 4096, r0[1], r0[2] + 0x40000000,
                                                         r0[3]), [s.mem.fd])


def h_addreg_past_file(b):
    with addreg_session(b) as s:
        return send_expect_refusal(s, 'ADD_MEM_REG past its file', ADD_MEM_REG,
                                   single_region_payload(0, 8 * MiB, U, 0), [s.mem.fd])


def h_addreg_no_fd(b):
    with addreg_session(b) as s:
        return send_expect_refusal(s, 'ADD_MEM_REG without fd', ADD_MEM_REG,
                                   single_region_payload(*s.mem.table()[0]), [])


def h_addreg_too_many(b):
    with addreg_session(b, [(0, 64 * KiB * 40)]) as s:
        slots = s.conn.get_u64(GET_MAX_MEM_SLOTS)
        check(0 < slots <= 64, 'GET_MAX_MEM_SLOTS %d' % slots)
        for i in range(slots):
            ack = s.add_mem_reg((i * MiB, 64 * KiB, U + i * MiB, i * 64 * KiB))
            check(ack == 0, 'ADD_MEM_REG %d of %d acked %r' % (i + 1, slots, ack))
        return send_expect_refusal(s, 'ADD_MEM_REG number %d (max %d)' % (slots + 1, slots),
                                   ADD_MEM_REG, single_region_payload(
                                       slots * MiB, 64 * KiB, U + slots * MiB, slots * 64 * KiB),
                                   [s.mem.fd])


def h_remreg_unknown(b):
    with addreg_session(b) as s:
        check(s.add_mem_reg(s.mem.table()[0]) == 0, 'ADD_MEM_REG refused')
        return send_expect_refusal(s, 'REM_MEM_REG of a region never added', REM_MEM_REG,
                                   single_region_payload(*s.mem.table()[1]), [s.mem.fd])


def h_remreg_running_ring(b):
    """REM_MEM_REG of the region holding a running ring, then a request:
    the back-end must not touch the unmapped memory."""
    s, q = setup_session(b, SPLIT, ring_region=1, memmode='addreg')
    try:
        d = BlkDriver(q)
        reqs = [d.request(T_IN, 0, None, [4096])]
        ack = s.conn.request(REM_MEM_REG, single_region_payload(*s.mem.table()[1]),
                             [s.mem.fd], True)
        q.submit([c for _, c in reqs], force_kick=True)
        try:
            q.wait_used(1, 1.0)
            done = 'completed'
        except vu.Timeout:
            done = 'no completion'
        if ack:
            return 'REM_MEM_REG refused (ack %#x); %s' % (ack, done)
        return 'REM_MEM_REG acked 0, then %s; daemon %s' % (done, b.status())
    finally:
        s.close()


def h_stall_mid_message(b):
    """A header announcing 40 payload bytes, then silence (connection kept)."""
    with base_session(b, memtable=False) as s:
        s.conn.send_raw(HDR.pack(SET_MEM_TABLE, VERSION | FLAG_NEED_REPLY, 40))
        kind, r = s.conn.outcome(10.0)
        if kind == 'closed':
            return 'dropped (%s)' % r
        raise Fail('stalled mid-message: %s after 10s' % kind)


def h_inflight_zero_queues(b):
    with base_session(b, memtable=False) as s:
        need(s.acked_pf & bit(PF_INFLIGHT_SHMFD), 'INFLIGHT_SHMFD not offered')
        s.conn.send(GET_INFLIGHT_FD, struct.pack('<QQHH', 0, 0, 0, 256) + bytes(4))
        return expect_drop(s.conn, 'no reply and no drop (hang)',
                           lambda r: 'GET_INFLIGHT_FD for 0 queues answered %r' % r)


def h_inflight_eventfd(b):
    with base_session(b, memtable=False) as s:
        need(s.acked_pf & bit(PF_INFLIGHT_SHMFD), 'INFLIGHT_SHMFD not offered')
        fd = os.eventfd(0)
        try:
            return send_expect_refusal(s, 'SET_INFLIGHT_FD with an eventfd', SET_INFLIGHT_FD,
                                       struct.pack('<QQHH', 4096, 0, 1, 256) + bytes(4), [fd])
        finally:
            os.close(fd)


def h_inflight_too_small(b):
    with base_session(b, memtable=False) as s:
        need(s.acked_pf & bit(PF_INFLIGHT_SHMFD), 'INFLIGHT_SHMFD not offered')
        fd = os.memfd_create('vu-inflight', os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, 4096)
            return send_expect_refusal(s, 'SET_INFLIGHT_FD saying 1 MiB of a 4 KiB file',
                                       SET_INFLIGHT_FD,
                                       struct.pack('<QQHH', MiB, 0, 1, 256) + bytes(4), [fd])
        finally:
            os.close(fd)


def completion_then_alive(b, q, what):
    """After a request into memory the front-end took away: whether it
    completed is the daemon's business; that it is still alive is ours."""
    try:
        q.wait_used(1, 2.0)
        done = 'completed'
    except vu.Timeout:
        done = 'no completion'
    time.sleep(0.2)
    if not b.alive():
        raise Fail('%s: daemon %s' % (what, b.status()))
    return done


def h_memfd_shrunk(b):
    """The front-end shrinks the guest memfd after SET_MEM_TABLE (it owns the
    file; QEMU seals its memfds, a hostile front-end need not), then asks for
    a read into the part that is gone: the back-end must not die of SIGBUS."""
    s, q = setup_session(b, ONE)
    try:
        d = BlkDriver(q)
        s.mem.regions[0].next_free = 3 * MiB
        req, chain = d.request(T_IN, 0, None, [4096])
        os.ftruncate(s.mem.fd, 2 * MiB)         # the data buffer is past the end now
        q.submit([chain], force_kick=True)
        # Its status byte lies past the end of the file: not ours to read either.
        return completion_then_alive(b, q, 'memfd shrunk to 2 MiB under a 4 MiB region, '
                                           'read into [3 MiB, +4 KiB)')
    finally:
        s.close()


def h_inflight_shrunk(b):
    """SET_INFLIGHT_FD with the front-end's own memfd, shrunk afterwards,
    then a request: the back-end writes the inflight region."""
    s = base_session(b)
    try:
        need(s.acked_pf & bit(PF_INFLIGHT_SHMFD), 'INFLIGHT_SHMFD not offered')
        r = s.conn.get_inflight_fd(1, 256)
        size = struct.unpack_from('<Q', r.payload)[0]
        r.close_fds()
        fd = os.memfd_create('vu-inflight', os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, max(size, 4096))
            ack = s.conn.request(SET_INFLIGHT_FD, struct.pack('<QQHH', size, 0, 1, 256) +
                                 bytes(4), [fd], True)
            if ack:
                return 'SET_INFLIGHT_FD refused (ack %#x)' % ack
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
        q = s.add_vq(0, 256)
        s.start_vq(q)
        d = BlkDriver(q)
        d.vq.submit([d.request(T_IN, 0, None, [4096])[1]], force_kick=True)
        return completion_then_alive(b, q, 'inflight memfd shrunk to 0 after SET_INFLIGHT_FD, '
                                           'one request')
    finally:
        s.close()


def h_long_chain(b):
    """One read of 1000 segments of 512 bytes (seg_max is what the driver
    should respect; the device must still not overflow anything): correct
    data or an error status or a broken ring, never a crash."""
    s, q = setup_session(b, ONE)
    try:
        q2 = q
        m = s.mem
        hdr = m.alloc(16, 16)
        m.write(hdr, struct.pack('<IIQ', T_IN, 0, 2048))
        segs = [(m.alloc(512, 512), 512, True) for _ in range(1000)]
        st = m.alloc(1, 1)
        m.write(st, b'\xee')
        q2.indirect = True
        h = q2.add([(hdr, 16, False)] + segs + [(st, 1, True)], indirect=True)
        old = q2.publish([h])
        q2.kick(old, force=True)
        try:
            q2.wait_used(1, 2.0)
        except vu.Timeout:
            return 'no completion (ring broken)'
        status = m.read(st, 1)[0]
        if status != S_OK:
            return 'completed with status %d' % status
        got = b''.join(m.read(a, n) for a, n, _ in segs)
        want = image_bytes(b.image, 2048 * 512, 1000 * 512)
        check(got == want, '1000-segment read completed OK with wrong data')
        return 'completed OK with the right data'
    finally:
        s.close()


# --- Bad descriptors -------------------------------------------------------

def desc_case(build, what, check_image=None):
    """A running ring on the SPLIT layout; build(s, q) writes descriptors and
    returns (heads, status_gpas, allowed_write_ranges). The request must
    complete with a non-OK status, or the device must stop (no completion, or
    a dropped connection). Memory outside the used ring, the status bytes and
    allowed ranges must be unchanged; image unchanged where check_image says."""
    def fn(b):
        img_before = image_bytes(b.image, 0, IMAGE_SIZE)
        s, q = setup_session(b, SPLIT, ring_region=0)
        errfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            s.conn.set_u64(SET_VRING_ERR, 0, fds=[errfd])
            heads, statuses, allowed = build(s, q)
            before = bytearray(s.mem.snapshot())
            old = q.publish(heads)
            q.kick(old, force=True)
            try:
                done = q.wait_used(len(heads), 1.0)
                outcome = None
            except vu.Timeout as e:
                done, outcome = [], 'no completion (%s)' % e
            after = bytearray(s.mem.snapshot())
            # what the device may write
            skip = [(s.mem.off(q.used), 6 + 8 * q.size),      # device-written
                    (s.mem.off(q.avail), 6 + 2 * q.size)]     # ours (idx, used_event)
            skip += [(s.mem.off(a), 1) for a in statuses]
            skip += [(s.mem.off(a), n) for a, n in allowed]
            for o, n in skip:
                before[o:o + n] = after[o:o + n]
            if before != after:
                i = next(k for k in range(len(after)) if before[k] != after[k])
                raise Fail('%s: the device wrote guest memory it must not touch (file offset '
                           '%#x)' % (what, i))
            if check_image:
                img = image_bytes(b.image, 0, IMAGE_SIZE)
                if img != img_before:
                    i = next(k for k in range(IMAGE_SIZE) if img[k] != img_before[k])
                    raise Fail('%s: the image changed at byte %#x (sector %d)' % (what, i, i // 512))
            if done:
                sts = [s.mem.read(a, 1)[0] for a in statuses]
                if statuses and all(x == S_OK for x in sts):
                    raise Fail('%s: completed with status OK (used %r)' % (what, done))
                outcome = 'completed, used %r, status %r' % (done, sts)
            dropped = s.conn.is_closed(0.3)
            try:
                errs = os.eventfd_read(errfd)
            except BlockingIOError:
                errs = 0
            return '%s%s%s' % (outcome, '; connection dropped' if dropped else '',
                               '; err fd signalled' if errs else '')
        finally:
            os.close(errfd)
            s.close()
    return fn


HOLE = 0x80000000          # between the SPLIT regions
R0_END = 2 * MiB


def req_with(s, q, type_, segs, hdr_gpa=None, st_gpa=None, sector=0):
    """A request chain with arbitrary data segments (gpa, len, writable)."""
    m = s.mem
    hdr = m.alloc(16, 16) if hdr_gpa is None else hdr_gpa
    if hdr_gpa is None:
        m.write(hdr, struct.pack('<IIQ', type_, 0, sector))
    st = m.alloc(1, 1) if st_gpa is None else st_gpa
    if st_gpa is None:
        m.write(st, b'\xee')
    chain = [(hdr, 16, False)] + list(segs) + [(st, 1, True)]
    return q.add(chain, indirect=False), ([st] if st_gpa is None else [])


def d_read_into_hole(s, q):
    h, st = req_with(s, q, T_IN, [(HOLE, 4096, True)])
    return [h], st, []


def d_read_straddle(s, q):
    h, st = req_with(s, q, T_IN, [(R0_END - 512, 4096, True)])
    return [h], st, [(R0_END - 512, 512)]


def d_read_wrap(s, q):
    h, st = req_with(s, q, T_IN, [(2**64 - 4096, 8192, True)])
    return [h], st, []


def d_write_from_hole(s, q):
    h, st = req_with(s, q, T_OUT, [(HOLE, 4096, False)], sector=100)
    return [h], st, []


def d_write_from_beyond(s, q):
    h, st = req_with(s, q, T_OUT, [(0x300000000, 4096, False)], sector=100)
    return [h], st, []


def d_hdr_outside(s, q):
    h, st = req_with(s, q, T_IN, [(s.mem.alloc(512, 512), 512, True)], hdr_gpa=HOLE)
    return [h], st, []


def d_status_outside(s, q):
    a = s.mem.alloc(512, 512)
    h, st = req_with(s, q, T_IN, [(a, 512, True)], st_gpa=HOLE)
    return [h], [], [(a, 512)]


def d_loop(s, q):
    m = s.mem
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_IN, 0, 0))
    a = m.alloc(512, 512)
    q.write_desc(0, hdr, 16, VRING_DESC_F_NEXT, 1)
    q.write_desc(1, a, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 0)
    return [0], [], [(a, 512)]


def d_self_loop(s, q):
    m = s.mem
    a = m.alloc(512, 512)
    q.write_desc(5, a, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 5)
    return [5], [], [(a, 512)]


def d_next_out_of_ring(s, q):
    m = s.mem
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_IN, 0, 0))
    q.write_desc(0, hdr, 16, VRING_DESC_F_NEXT, q.size + 7)
    return [0], [], []


def d_head_out_of_ring(s, q):
    return [q.size + 3], [], []


def d_head_0xffff(s, q):
    return [0xffff], [], []


def d_indirect_outside(s, q):
    q.write_desc(0, HOLE, 64, VRING_DESC_F_INDIRECT, 0)
    return [0], [], []


def d_indirect_loop(s, q):
    m = s.mem
    t = m.alloc(48, 16)
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_IN, 0, 0))
    a = m.alloc(512, 512)
    q.write_desc(0, hdr, 16, VRING_DESC_F_NEXT, 1, t)
    q.write_desc(1, a, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 0, t)
    q.write_desc(2, a, 1, VRING_DESC_F_WRITE, 0, t)
    q.write_desc(0, t, 48, VRING_DESC_F_INDIRECT, 0)
    return [0], [], [(a, 512)]


def d_indirect_next_out(s, q):
    m = s.mem
    t = m.alloc(32, 16)
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_IN, 0, 0))
    q.write_desc(0, hdr, 16, VRING_DESC_F_NEXT, 9, t)
    q.write_desc(1, hdr, 1, VRING_DESC_F_WRITE, 0, t)
    q.write_desc(0, t, 32, VRING_DESC_F_INDIRECT, 0)
    return [0], [], []


def d_indirect_nested(s, q):
    m = s.mem
    inner = m.alloc(48, 16)
    outer = m.alloc(16, 16)
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_IN, 0, 0))
    a = m.alloc(512, 512)
    st = m.alloc(1, 1)
    m.write(st, b'\xee')
    q.write_desc(0, hdr, 16, VRING_DESC_F_NEXT, 1, inner)
    q.write_desc(1, a, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2, inner)
    q.write_desc(2, st, 1, VRING_DESC_F_WRITE, 0, inner)
    q.write_desc(0, inner, 48, VRING_DESC_F_INDIRECT, 0, outer)
    q.write_desc(0, outer, 16, VRING_DESC_F_INDIRECT, 0)
    return [0], [st], [(a, 512)]


def d_indirect_len_odd(s, q):
    m = s.mem
    t = m.alloc(48, 16)
    q.write_desc(0, t, 40, VRING_DESC_F_INDIRECT, 0)
    return [0], [], []


def d_indirect_huge(s, q):
    m = s.mem
    t = m.alloc(4096, 16)
    q.write_desc(0, t, 0xfffffff0, VRING_DESC_F_INDIRECT, 0)
    return [0], [], []


def d_avail_too_far(s, q):
    """avail->idx more than the ring size ahead of what the device has seen."""
    m = s.mem
    a = m.alloc(512, 512)
    h, st = req_with(s, q, T_IN, [(a, 512, True)])
    for i in range(q.size):
        m.put('<H', q.avail + 4 + 2 * i, h)
    q.avail_idx = (q.avail_idx + q.size + 10 - 1) & 0xffff   # publish adds one more
    return [h], st, [(a, 512)]


def d_sector_beyond(s, q):
    a = s.mem.alloc(4096, 512)
    h, st = req_with(s, q, T_IN, [(a, 4096, True)], sector=IMAGE_SIZE // 512 - 4)
    return [h], st, [(a, 4096)]


def d_sector_wrap_write(s, q):
    a = s.mem.alloc(512, 512)
    s.mem.write(a, b'\x66' * 512)
    # sector * 512 wraps to 0 in 64 bits
    h, st = req_with(s, q, T_OUT, [(a, 512, False)], sector=1 << 55)
    return [h], st, []


def d_sector_wrap_read(s, q):
    a = s.mem.alloc(4096, 512)
    h, st = req_with(s, q, T_IN, [(a, 4096, True)], sector=(1 << 64) - 1)
    return [h], st, [(a, 4096)]


def d_write_hdr_writable(s, q):
    m = s.mem
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_OUT, 0, 200))
    a = m.alloc(512, 512)
    m.write(a, b'\x77' * 512)
    st = m.alloc(1, 1)
    m.write(st, b'\xee')
    h = q.add([(hdr, 16, True), (a, 512, False), (st, 1, True)], indirect=False)
    return [h], [st], [(hdr, 16)]


def d_no_status(s, q):
    m = s.mem
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_IN, 0, 0))
    h = q.add([(hdr, 16, False)], indirect=False)
    return [h], [], []


def d_status_readonly(s, q):
    m = s.mem
    a = m.alloc(512, 512)
    st = m.alloc(1, 1)
    m.write(st, b'\xee')
    hdr = m.alloc(16, 16)
    m.write(hdr, struct.pack('<IIQ', T_IN, 0, 0))
    h = q.add([(hdr, 16, False), (a, 512, True), (st, 1, False)], indirect=False)
    return [h], [], [(a, 512)]


def d_read_len_huge2(s, q):
    r1 = s.mem.regions[1]
    a = s.mem.alloc(4096, 4096, 1)
    h, st = req_with(s, q, T_IN, [(a, 0xffffffff, True)])
    return [h], st, [(a, r1.gpa + r1.size - a)]


HOSTILE = [
    # name, function, what it proves
    ('payload too short (SET_FEATURES, 4 bytes)', h_short_payload),
    ('payload too long (SET_FEATURES, 16 bytes)', h_long_payload),
    ('payload too short (SET_VRING_NUM, 4 bytes)', h_vring_state_short),
    ('payload too short (SET_VRING_ADDR, no log field)', h_vring_addr_short),
    ('header size 0xffffffff', h_huge_size),
    ('payload larger than any message (4104 bytes)', h_size_beyond_max),
    ('SET_MEM_TABLE nregions disagrees with payload', h_memtable_payload_short),
    ('SET_MEM_TABLE fewer fds than regions', h_memtable_fewer_fds),
    ('SET_MEM_TABLE without fds', h_memtable_no_fds),
    ('SET_MEM_TABLE more fds than regions', h_memtable_more_fds),
    ('SET_VRING_KICK without fd and without NOFD flag', h_kick_no_fd),
    ('SET_VRING_CALL without fd and without NOFD flag', h_call_no_fd),
    ('GET_FEATURES with extra fds', h_get_features_fds),
    ('SET_FEATURES with an extra fd', h_set_features_fd),
    ('header version 2', h_bad_version),
    ('regions overlap in GPA', table_case(
        'overlapping GPA', [(0, 2 * MiB, U, 0), (1 * MiB, 2 * MiB, U + 0x10000000, 2 * MiB)],
        layout=[(0, 4 * MiB)])),
    ('regions overlap in user address', table_case(
        'overlapping UVA', [(0, 2 * MiB, U, 0), (0x100000000, 2 * MiB, U + MiB, 2 * MiB)],
        layout=[(0, 4 * MiB)])),
    ('region GPA wraps 2^64', table_case(
        'gpa+size wraps', [(2**64 - 4096, 2 * MiB, U, 0)], layout=[(0, 2 * MiB)])),
    ('region user address wraps 2^64', table_case(
        'uva+size wraps', [(0, 2 * MiB, 2**64 - 4096, 0)], layout=[(0, 2 * MiB)])),
    ('region mmap_offset+size wraps 2^64', table_case(
        'offset+size wraps', [(0, 2 * MiB, U, 2**64 - 4096)], layout=[(0, 2 * MiB)])),
    ('region of size 0', table_case('size 0', [(0, 0, U, 0)], layout=[(0, 2 * MiB)])),
    ('region beyond its memfd (offset+size > file)', table_case(
        'offset+size past the file', [(0, 2 * MiB, U, 1 * MiB)], layout=[(0, 2 * MiB)])),
    ('region bigger than its memfd (ring placed there)', h_region_past_memfd),
    ('region with a non-mappable fd (eventfd)', h_eventfd_region),
    ('nregions 9 (> 8)', h_too_many_regions),
    ('nregions 0xffffffff', h_nregions_huge),
    ('nregions 0 with a region and an fd', h_nregions_zero),
    ('ring descriptor table outside every region', ring_case(
        'desc outside', lambda s, q: (SET_VRING_ADDR, vring_addr(q, desc=0x1000), []))),
    ('ring used ring outside every region', ring_case(
        'used outside', lambda s, q: (SET_VRING_ADDR, vring_addr(q, used=U - 0x100000), []))),
    ('ring avail ring straddles a region end', ring_case(
        'avail straddles', lambda s, q: (SET_VRING_ADDR, vring_addr(
            q, avail=s.mem.regions[0].uva + 2 * MiB - 16), []))),
    ('ring desc table given as GPA, not user address', ring_case(
        'desc as GPA', lambda s, q: (SET_VRING_ADDR, vring_addr(q, desc=q.desc + 0x200000000), []))),
    ('ring size 100 (not a power of 2)', ring_case(
        'num 100', lambda s, q: (SET_VRING_NUM, struct.pack('<II', 0, 100), []))),
    ('ring size 0', ring_case(
        'num 0', lambda s, q: (SET_VRING_NUM, struct.pack('<II', 0, 0), []))),
    ('ring size 2048 (> backend max 1024)', ring_case(
        'num 2048', lambda s, q: (SET_VRING_NUM, struct.pack('<II', 0, 2048), []))),
    ('ring size 65536 (> 32768)', ring_case(
        'num 65536', lambda s, q: (SET_VRING_NUM, struct.pack('<II', 0, 65536), []))),
    ('SET_VRING_BASE 0x10000 (> 65535)', ring_case(
        'base 0x10000', lambda s, q: (SET_VRING_BASE, struct.pack('<II', 0, 0x10000), []))),
    ('SET_VRING_NUM on queue 5 (1 queue)', ring_case(
        'index 5', lambda s, q: (SET_VRING_NUM, struct.pack('<II', 5, 256), []))),
    ('SET_VRING_ADDR on queue 0xffffffff', ring_case(
        'index 0xffffffff', lambda s, q: (SET_VRING_ADDR, vring_addr(q, index=0xffffffff), []))),
    ('SET_VRING_KICK on queue 200', ring_case(
        'kick index 200', lambda s, q: (SET_VRING_KICK, struct.pack('<Q', 200), [q.kick_fd]))),
    ('SET_VRING_CALL on queue 255 with NOFD', ring_case(
        'call index 255', lambda s, q: (SET_VRING_CALL, struct.pack('<Q', 255 | VRING_NOFD),
                                        []))),
    ('SET_VRING_ENABLE on queue 7', ring_case(
        'enable index 7', lambda s, q: (SET_VRING_ENABLE, struct.pack('<II', 7, 1), []))),
    ('SET_VRING_ENABLE num 2', ring_case(
        'enable num 2', lambda s, q: (SET_VRING_ENABLE, struct.pack('<II', 0, 2), []))),
    ('GET_VRING_BASE on queue 9', ring_case(
        'get base index 9', lambda s, q: (GET_VRING_BASE, struct.pack('<II', 9, 0), []))),
    ('rings before the memory table, then a kick', h_rings_before_table),
    ('memory table dropping the running ring\'s region', h_table_after_ring_break),
    ('unknown request 999', h_unknown(999)),
    ('request number 0', h_unknown(0)),
    ('request number 0xffffffff', h_unknown(0xffffffff)),
    ('header only, then close', then_close(
        'header of SET_MEM_TABLE (40-byte payload announced) then close',
        lambda s: (HDR.pack(SET_MEM_TABLE, VERSION | FLAG_NEED_REPLY, 8 + 32), ()))),
    ('half a payload, then close', then_close(
        'half a SET_MEM_TABLE payload (with its fd) then close', half_mem_table)),
    ('half a header, then close', then_close(
        '6 bytes of a header then close', lambda s: (HDR.pack(GET_FEATURES, VERSION, 0)[:6], ()))),
    ('close with a request in flight', h_close_with_running_ring),
    ('SET_VRING_KICK with a pipe instead of an eventfd', h_kick_pipe),
    ('SET_CONFIG size field beyond its payload', h_set_config_short),
    ('SET_CONFIG offset 0xfffffff0', h_set_config_outside),
    ('GET_CONFIG size field beyond its payload', h_get_config_short),
    ('GET_CONFIG offset+size wraps', h_get_config_huge),
    ('SET_FEATURES with features not offered', h_features_not_offered),
    ('SET_PROTOCOL_FEATURES with bits not offered', h_pf_not_offered),
    ('SET_LOG_BASE without LOG_SHMFD', h_set_log_base),
    ('ADD_MEM_REG overlapping a region', h_addreg_overlap),
    ('ADD_MEM_REG past its file', h_addreg_past_file),
    ('ADD_MEM_REG without fd', h_addreg_no_fd),
    ('ADD_MEM_REG beyond GET_MAX_MEM_SLOTS', h_addreg_too_many),
    ('REM_MEM_REG of a region never added', h_remreg_unknown),
    ('REM_MEM_REG of the running ring\'s region, then a request', h_remreg_running_ring),
    ('header then silence (stall mid-message)', h_stall_mid_message),
    ('GET_INFLIGHT_FD for 0 queues', h_inflight_zero_queues),
    ('SET_INFLIGHT_FD with an eventfd', h_inflight_eventfd),
    ('SET_INFLIGHT_FD bigger than its file', h_inflight_too_small),
    ('guest memfd shrunk after SET_MEM_TABLE, then I/O there', h_memfd_shrunk),
    ('inflight memfd shrunk after SET_INFLIGHT_FD, then I/O', h_inflight_shrunk),
    ('desc: one read of 1000 segments', h_long_chain),
    ('desc: read into the hole between regions', desc_case(d_read_into_hole, 'read into hole')),
    ('desc: read straddling a region end', desc_case(d_read_straddle, 'read straddles')),
    ('desc: read at GPA wrapping 2^64', desc_case(d_read_wrap, 'read wraps')),
    ('desc: read of length 0xffffffff', desc_case(d_read_len_huge2, 'read len huge')),
    ('desc: write from the hole', desc_case(d_write_from_hole, 'write from hole', True)),
    ('desc: write from beyond all memory', desc_case(d_write_from_beyond, 'write beyond', True)),
    ('desc: header outside memory', desc_case(d_hdr_outside, 'header outside', True)),
    ('desc: status byte outside memory', desc_case(d_status_outside, 'status outside')),
    ('desc: chain loops (0 -> 1 -> 0)', desc_case(d_loop, 'loop')),
    ('desc: chain loops on itself', desc_case(d_self_loop, 'self loop')),
    ('desc: next beyond the ring', desc_case(d_next_out_of_ring, 'next out of ring')),
    ('desc: head beyond the ring', desc_case(d_head_out_of_ring, 'head out of ring')),
    ('desc: head 0xffff', desc_case(d_head_0xffff, 'head 0xffff')),
    ('desc: indirect table outside memory', desc_case(d_indirect_outside, 'indirect outside')),
    ('desc: indirect chain loops', desc_case(d_indirect_loop, 'indirect loop')),
    ('desc: indirect next beyond its table', desc_case(d_indirect_next_out, 'indirect next')),
    ('desc: nested indirect', desc_case(d_indirect_nested, 'nested indirect')),
    ('desc: indirect length not a multiple of 16', desc_case(d_indirect_len_odd, 'indirect len')),
    ('desc: indirect length 0xfffffff0', desc_case(d_indirect_huge, 'indirect huge')),
    ('desc: avail idx jumps past the ring size', desc_case(d_avail_too_far, 'avail too far')),
    ('desc: no status descriptor', desc_case(d_no_status, 'no status')),
    ('desc: status in a device-readable descriptor', desc_case(d_status_readonly, 'status ro')),
    ('desc: write request with a device-writable header',
     desc_case(d_write_hdr_writable, 'writable header', True)),
    ('blk: read past the capacity', desc_case(d_sector_beyond, 'sector beyond')),
    ('blk: write at sector 2^55 (byte offset wraps to 0)',
     desc_case(d_sector_wrap_write, 'sector wrap', True)),
    ('blk: read at sector 2^64-1', desc_case(d_sector_wrap_read, 'sector 2^64-1')),
]


# --- Protocol details ------------------------------------------------------

def p_addreg_twice(b):
    """The same region added twice (QEMU does so once per queue pair of a
    multiqueue netdev, on one connection): counted, so that the first
    REM_MEM_REG leaves it mapped and the second removes it."""
    if BACKEND[0] != 'fdvm':
        raise NotOffered('duplicate ADD_MEM_REG')
    s, q = setup_session(b, SPLIT, ring_region=0, memmode='addreg')
    try:
        r1 = s.mem.table()[1]
        check(s.add_mem_reg(r1) == 0, 'ADD_MEM_REG of a region already there refused')
        check(s.conn.request(REM_MEM_REG, single_region_payload(*r1), [s.mem.fd], True) == 0,
              'first REM_MEM_REG refused')
        n = blk_io(s, q, 512, pattern(11, 64 * KiB), (8192, 24576), data_regions=(1,))
        check(s.conn.request(REM_MEM_REG, single_region_payload(*r1), [s.mem.fd], True) == 0,
              'second REM_MEM_REG refused')
        ack = s.conn.request(REM_MEM_REG, single_region_payload(*r1), [s.mem.fd], True)
        check(ack != 0, 'a third REM_MEM_REG of a region added twice was acked')
        return '%d requests in the region between the two removals' % n
    finally:
        s.close()


def p_get_vring_base_stops(b):
    s, q = setup_session(b, SPLIT, ring_region=1)
    try:
        d = BlkDriver(q)
        data = pattern(3, 4096)
        res = d.run([d.request(T_OUT, 300, data)])
        check(res[0][2] == S_OK, 'write status %d' % res[0][2])
        idx, num = s.conn.get_vring_base(0)
        check(num == 1, 'GET_VRING_BASE num %d, expected 1' % num)
        # ring stopped: a new request and a kick produce nothing
        r2 = d.request(T_IN, 300, None, [4096])
        q.submit([r2[1]], force_kick=True)
        try:
            q.wait_used(1, 1.0, strict_call=False)
            raise Fail('a request was completed after GET_VRING_BASE stopped the ring')
        except vu.Timeout:
            pass
        check(q.used_idx() == 1, 'used idx moved to %d after the ring stopped' % q.used_idx())
        # restart at the returned base, as QEMU does on resume: the pending one completes
        q2kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        os.close(q.kick_fd)
        q.kick_fd = q2kick
        c = s.conn
        acks = [c.vring_state(SET_VRING_NUM, 0, q.size, s.reply_ack),
                c.vring_state(SET_VRING_BASE, 0, num, s.reply_ack),
                c.request(SET_VRING_ADDR, q.addr_payload(), (), s.reply_ack),
                c.set_u64(SET_VRING_KICK, 0, s.reply_ack, [q.kick_fd]),
                # a front-end may take its time between messages (QEMU sends
                # CALL after KICK): the back-end must not lose the completion
                time.sleep(0.3),
                c.set_u64(SET_VRING_CALL, 0, s.reply_ack, [q.call_fd]),
                c.vring_state(SET_VRING_ENABLE, 0, 1, s.reply_ack)]
        check(all(not a for a in acks), 'restart acks %r' % acks)
        q.kick(force=True)
        done = q.wait_used(1, IO_TIMEOUT)
        st = s.mem.read(r2[0].status, 1)[0]
        check(st == S_OK and d.read_data(r2[0]) == data,
              'after restart: status %d, data %s' % (st, 'same' if d.read_data(r2[0]) == data
                                                     else 'differs'))
        idx, num = c.get_vring_base(0)
        check(num == 2, 'second GET_VRING_BASE num %d, expected 2' % num)
        return 'stopped, then restarted at base 1: pending request served'
    finally:
        s.close()


def p_reset_device(b):
    s, q = setup_session(b)
    try:
        need(s.acked_pf & bit(PF_RESET_DEVICE), 'RESET_DEVICE not offered')
        d = BlkDriver(q)
        res = d.run([d.request(T_OUT, 400, pattern(4, 4096))])
        check(res[0][2] == S_OK, 'write status %d' % res[0][2])
        ack = s.conn.request(RESET_DEVICE, b'', (), s.reply_ack)
        check(not ack, 'RESET_DEVICE acked %r' % ack)
        # rings are stopped: a kick does nothing
        r2 = d.request(T_IN, 400, None, [4096])
        q.submit([r2[1]], force_kick=True)
        try:
            q.wait_used(1, 1.0, strict_call=False)
            raise Fail('a request was completed after RESET_DEVICE')
        except vu.Timeout:
            pass
        # set up again on the same connection, a fresh ring
        c = s.conn
        ack = c.set_u64(SET_FEATURES, s.acked, s.reply_ack)
        check(not ack, 'SET_FEATURES after reset acked %r' % ack)
        ack = s.set_mem_table()
        check(not ack, 'SET_MEM_TABLE after reset acked %r' % ack)
        q2 = s.add_vq(0, 128)
        s.start_vq(q2)
        data = pattern(5, 16 * KiB)
        blk_io(s, q2, 500, data, [4096, 12288])
        return 'reset, then a new ring on the same connection works'
    finally:
        s.close()


def p_status(b):
    with Session(b) as s:
        s.negotiate()
        need(s.acked_pf & bit(PF_STATUS), 'STATUS not offered')
        out = []
        for v in (0x1, 0x3, 0xb, 0xf):
            ack = s.conn.set_u64(SET_STATUS, v, s.reply_ack)
            check(not ack, 'SET_STATUS %#x acked %r' % (v, ack))
            got = s.conn.get_u64(GET_STATUS)
            check(got == v, 'GET_STATUS %#x after SET_STATUS %#x' % (got, v))
            out.append('%#x' % got)
        return 'GET_STATUS returned ' + ', '.join(out)


def p_inflight(b):
    with Session(b) as s:
        s.negotiate()
        need(s.acked_pf & bit(PF_INFLIGHT_SHMFD), 'INFLIGHT_SHMFD not offered')
        r = s.conn.get_inflight_fd(1, 256)
        try:
            check(len(r.payload) == 24, 'GET_INFLIGHT_FD reply of %d bytes (24 expected)'
                  % len(r.payload))
            size, off, nq, qs = struct.unpack('<QQHH', r.payload[:20])
            check(len(r.fds) == 1, 'GET_INFLIGHT_FD reply with %d fds' % len(r.fds))
            check(size > 0, 'mmap_size 0')
            st = os.fstat(r.fds[0])
            check(st.st_size >= off + size, 'inflight fd of %d bytes < offset %d + size %d'
                  % (st.st_size, off, size))
            m = mmap.mmap(r.fds[0], size, offset=off) if off % mmap.PAGESIZE == 0 else None
            if m:
                m.close()
            ack = s.conn.request(SET_INFLIGHT_FD, r.payload, r.fds, s.reply_ack)
            check(not ack, 'SET_INFLIGHT_FD with the returned fd acked %r' % ack)
            return 'mmap_size %d, offset %d, fd of %d bytes' % (size, off, st.st_size)
        finally:
            r.close_fds()


def p_reply_ack(b):
    with Session(b) as s:
        s.negotiate()
        need(s.reply_ack, 'REPLY_ACK not offered')
        c = s.conn
        out = []
        for name, req, payload, fds in (
                ('SET_OWNER', SET_OWNER, b'', []),
                ('SET_FEATURES', SET_FEATURES, struct.pack('<Q', s.acked), []),
                ('SET_PROTOCOL_FEATURES', SET_PROTOCOL_FEATURES,
                 struct.pack('<Q', s.acked_pf), []),
                ('SET_MEM_TABLE', SET_MEM_TABLE, mem_table_payload(s.mem.table()), [s.mem.fd]),
                ('SET_VRING_NUM', SET_VRING_NUM, struct.pack('<II', 0, 64), []),
                ('SET_VRING_CALL NOFD', SET_VRING_CALL, struct.pack('<Q', VRING_NOFD), [])):
            ack = c.request(req, payload, fds, True)
            check(ack == 0, '%s with need_reply: ack %r' % (name, ack))
            out.append(name)
        return 'acked 0: ' + ', '.join(out)


def p_one_at_a_time(b):
    s, q = setup_session(b)
    try:
        c2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c2.settimeout(1.0)
        try:
            c2.connect(b.sock)
            c2.sendall(HDR.pack(GET_FEATURES, VERSION, 0))
            try:
                data = c2.recv(64)
                served = len(data) > 0
            except socket.timeout:
                served = False
            check(not served, 'a second connection was answered while the first is active')
            # the first connection is unaffected
            blk_io(s, q, 600, pattern(6, 8 * KiB), [4096])
        finally:
            c2.close()
        return 'second connection not served while the first is open; first still works'
    finally:
        s.close()


def p_need_reply_on_get(b):
    """need_reply on requests that answer anyway: one reply, no extra ack."""
    with Session(b) as s:
        s.negotiate()
        need(s.reply_ack, 'REPLY_ACK not offered')
        c = s.conn
        c.send(GET_FEATURES, need_reply=True)
        f = c.reply(GET_FEATURES).u64()
        check(f == s.features, 'GET_FEATURES with need_reply: %#x' % f)
        c.send(GET_PROTOCOL_FEATURES, need_reply=True)
        c.reply(GET_PROTOCOL_FEATURES).u64()
        kind, r = c.outcome(0.5)
        check(kind == 'timeout', 'after the replies: %s %r' % (kind, r))
        c.send(GET_FEATURES)   # still in step
        check(c.reply(GET_FEATURES).u64() == s.features, 'out of step')
        return 'one reply each'


def p_blk_types(b):
    """GET_ID answers OK (20 bytes) or UNSUPP; an unknown type gets UNSUPP."""
    s, q = setup_session(b)
    try:
        d = BlkDriver(q)
        res = d.run([d.request(T_GET_ID, 0, None, [20]), d.request(99, 0, None, [512])])
        (r1, ln1, st1), (r2, ln2, st2) = res
        check(st1 in (S_OK, S_UNSUPP), 'GET_ID status %d' % st1)
        check(st2 == S_UNSUPP, 'request type 99: status %d, expected UNSUPP (2)' % st2)
        ident = d.read_data(r1).split(b'\0')[0] if st1 == S_OK else b''
        return 'GET_ID status %d %r; type 99 status %d' % (st1, ident, st2)
    finally:
        s.close()


def p_multiqueue(b, nq):
    """queues=N: GET_QUEUE_NUM, config num_queues, I/O on every queue at once."""
    s = Session(b, [(0, 4 * MiB)])
    try:
        s.negotiate(event_idx=True)
        got = s.queue_num()
        check(got == nq, 'GET_QUEUE_NUM %d, expected %d' % (got, nq))
        check(s.acked & bit(BLK_F_MQ), 'MQ not offered with queues=%d' % nq)
        s.get_config()
        cfg_nq = struct.unpack_from('<H', s.config, 34)[0]
        check(cfg_nq == nq, 'config num_queues %d' % cfg_nq)
        check(s.set_mem_table() == 0, 'SET_MEM_TABLE refused')
        qs = [s.add_vq(i, 128) for i in range(nq)]
        for q in qs:
            s.start_vq(q)
        drivers = [BlkDriver(q) for q in qs]
        # one batch per queue, all published before any is waited for
        batches = []
        for i, (q, d) in enumerate(zip(qs, drivers)):
            reqs = [d.request(T_OUT, 8192 + 64 * i + 8 * k, pattern(500 + 10 * i + k, 4096))
                    for k in range(8)]
            heads = q.submit([c for _, c in reqs])
            batches.append((q, reqs, heads))
        for q, reqs, heads in batches:
            done = q.wait_used(len(heads), IO_TIMEOUT)
            check(sorted(i for i, _ in done) == sorted(heads), 'queue %d: used ids %r'
                  % (q.index, done))
            for r, _ in reqs:
                check(s.mem.read(r.status, 1)[0] == S_OK, 'queue %d status' % q.index)
        for i in range(nq):
            for k in range(8):
                check(image_bytes(b.image, (8192 + 64 * i + 8 * k) * 512, 4096) ==
                      pattern(500 + 10 * i + k, 4096), 'queue %d request %d: image differs'
                      % (i, k))
        bases = [s.conn.get_vring_base(i)[1] for i in range(nq)]
        check(bases == [8] * nq, 'GET_VRING_BASE per queue %r' % bases)
        return '%d queues, 8 writes each, event index' % nq
    finally:
        s.close()


# --- Main ------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--fdvm')
    ap.add_argument('--backend', choices=['fdvm', 'qsd'], default='fdvm')
    ap.add_argument('--only', help='run only cases whose name contains this')
    ap.add_argument('--hostile-too', action='store_true',
                    help='run the hostile cases against qsd as well (to compare)')
    args = ap.parse_args()
    BACKEND[0] = args.backend

    if args.backend == 'fdvm':
        exe = args.fdvm
        if not exe or not os.access(exe, os.X_OK):
            print('1..0 # SKIP no fdvm executable (%s)' % exe)
            return 0
        h = subprocess.run([exe, 'serve', '--help'], capture_output=True, timeout=10)
        if h.returncode != 0 or b'blk' not in h.stdout + h.stderr:
            print('1..0 # SKIP %s has no `serve blk`' % exe)
            return 0
    else:
        exe = shutil.which('qemu-storage-daemon')
        if not exe:
            print('1..0 # SKIP qemu-storage-daemon not installed')
            return 0

    tmp = tempfile.mkdtemp(prefix='vu-protocol-')
    tap = Tap()
    backends = []
    try:
        image = os.path.join(tmp, 'disk.img')
        with open(image, 'wb') as f:
            f.write(pattern(99, IMAGE_SIZE))
        b = Backend(args.backend, exe, tmp, image)
        backends.append(b)
        b.start()
        sel = (lambda n: args.only in n) if args.only else (lambda n: True)

        def t(name, fn, *a, **kw):
            if sel(name):
                return tap.run(name, fn, *a, **kw)
            return None

        t('socket connectable as soon as it appears',
          lambda: check(b.first_connect_error is None, b.first_connect_error))
        # a. happy paths
        t('happy: SET_MEM_TABLE, one region, QEMU order', happy, b)
        t('happy: SET_MEM_TABLE, two regions with a hole, ring in the high one', happy, b,
          SPLIT, 1, (0, 1), qemu_order=False, seed=2)
        t('happy: event index', happy, b, SPLIT, 0, (1, 0), event_idx=True, seed=3)
        t('happy: indirect descriptors', happy, b, SPLIT, 1, (0, 1), indirect=True, seed=4)
        t('happy: event index + indirect descriptors', happy, b, ONE, 0, (0,),
          event_idx=True, indirect=True, seed=5)
        t('happy: ADD_MEM_REG, two regions with a hole', happy, b, SPLIT, 1, (0, 1),
          memmode='addreg', qemu_order=False, seed=6)
        t('happy: ADD_MEM_REG + event index + indirect', happy, b, SPLIT, 0, (1, 0),
          event_idx=True, indirect=True, memmode='addreg', seed=7)
        t('happy: second SET_MEM_TABLE while the ring runs (adds a region)', happy, b,
          SPLIT3, 1, (0, 1), seed=8,
          remap=(GuestMemory_table(SPLIT3)[:2], GuestMemory_table(SPLIT3)))
        t('happy: second SET_MEM_TABLE, same regions, event index', happy, b,
          SPLIT, 1, (0, 1), event_idx=True, seed=9,
          remap=(GuestMemory_table(SPLIT), GuestMemory_table(SPLIT)))
        t('happy: queue size 1024 (the maximum)', happy_big_ring, b)
        # c. protocol details
        t('protocol: REPLY_ACK 0 for good messages', p_reply_ack, b)
        t('protocol: GET_VRING_BASE stops the ring; restart at its base', p_get_vring_base_stops, b)
        t('protocol: RESET_DEVICE', p_reset_device, b)
        t('protocol: GET_STATUS returns what SET_STATUS set', p_status, b)
        t('protocol: GET_INFLIGHT_FD', p_inflight, b)
        t('protocol: one connection at a time', p_one_at_a_time, b)
        t('protocol: need_reply on GET_* gets one reply', p_need_reply_on_get, b)
        t('protocol: GET_ID, unknown request type UNSUPP', p_blk_types, b)
        t('protocol: a region added twice is removed twice', p_addreg_twice, b)

        # b. hostile front-ends, fdvm only
        if args.backend == 'fdvm' or args.hostile_too:
            idle_fds = idle_state(b)
            leaks = []
            for k, (name, fn) in enumerate(HOSTILE):
                if not sel('hostile: ' + name):
                    continue
                if not b.alive():   # an earlier case killed it: start a fresh one
                    b.stop()
                    b = Backend(args.backend, exe, tmp, image, name='vu-h%d' % k)
                    backends.append(b)
                    b.start()
                    idle_fds = idle_state(b)
                logpos = b.log_size()
                t0 = time.monotonic()
                try:
                    note = fn(b)
                    err = None
                except Exception as e:  # noqa: BLE001
                    note, err = None, '%s: %s' % (type(e).__name__, e)
                    if not isinstance(e, (Fail, vu.Timeout, vu.Closed, vu.ProtocolError)):
                        err += '\n' + traceback.format_exc()
                dt = time.monotonic() - t0
                after = None
                time.sleep(0.05)
                if not b.alive():
                    after = 'daemon %s afterwards' % b.status()
                else:
                    try:
                        quick_happy(b, seed=1000 + k)
                    except Exception as e:  # noqa: BLE001
                        after = 'next connection\'s happy path failed: %s: %s' % (
                            type(e).__name__, e)
                log = [l for l in b.log_since(logpos)
                       if 'frontend connected' not in l and 'frontend disconnected' not in l]
                diag = []
                if err:
                    diag.append(err)
                if after:
                    diag.append(after)
                if note:
                    diag.append(note + ' (%.1fs)' % dt)
                diag.append('daemon log (%d lines)%s' % (len(log), ': ' + ' | '.join(log[:4]) +
                            (' | ...' if len(log) > 4 else '') if log else ''))
                tap.result(not err and not after, 'hostile: ' + name, '\n'.join(diag))
                if b.alive():
                    now = idle_state(b)
                    if len(now) > len(idle_fds):
                        leaks.append('%s: %d -> %d fds (%s)' % (
                            name, len(idle_fds), len(now),
                            ', '.join(sorted(set(now) - set(idle_fds)))[:200]))
                        idle_fds = now
            if not args.only or 'leak' in args.only:
                maps = b.memfd_maps() if b.alive() else []
                tap.result(not leaks and not maps, 'hostile: no fd or mapping left behind',
                           '\n'.join(leaks + ['still mapped: ' + m for m in maps[:4]]))
        else:
            tap.skip('hostile front-ends', 'run against fdvm only')

        # teardown: SIGTERM with a connection open and a ring running
        if not args.only or 'teardown' in args.only:
            teardown(tap, b, args.backend)
            if args.backend == 'fdvm':
                b2 = Backend(args.backend, exe, tmp, image, name='vu2')
                backends.append(b2)
                try:
                    b2.start()
                    rc, removed = b2.stop(signal.SIGINT)
                    tap.result(rc == 0 and removed, 'teardown: SIGINT while idle: exit 0, socket '
                               'removed', 'exit %s, socket %s' % (rc, 'removed' if removed
                                                                  else 'left behind'))
                except Fail as e:
                    tap.result(False, 'teardown: SIGINT while idle', str(e))
                ro_tests(tap, exe, tmp, image, backends)
                mq_tests(tap, exe, tmp, image, backends)
    finally:
        for be in backends:
            try:
                be.stop(signal.SIGKILL if be.proc and be.proc.poll() is None else signal.SIGTERM)
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    tap.plan()
    return 0


def GuestMemory_table(layout, uva_base=0x7f1234500000, uva_gap=0x10000000):
    """The table GuestMemory(layout) will produce (same arithmetic)."""
    out, off = [], 0
    for i, (gpa, size) in enumerate(layout):
        out.append((gpa, size, uva_base + off + i * uva_gap, off))
        off += size
    return out


def happy_big_ring(b):
    s = Session(b, ONE)
    try:
        s.negotiate()
        if s.acked_pf & bit(PF_CONFIG):
            s.get_config()
        ack = s.set_mem_table()
        check(not ack, 'SET_MEM_TABLE acked %r' % ack)
        q = s.add_vq(0, 1024)
        s.start_vq(q)
        # more requests than a 256 ring holds, in two batches wrapping the ring
        total = 0
        for rnd in range(4):   # 4 x 300 requests of 3 descriptors: the ring wraps
            d = BlkDriver(q)
            reqs = [d.request(T_OUT, 6000 + 8 * i, pattern(rnd * 1000 + i, 4096))
                    for i in range(300)]
            res = d.run(reqs, IO_TIMEOUT)
            check(all(st == S_OK for _, _, st in res), 'statuses %r' %
                  sorted(set(st for _, _, st in res)))
            d.reset()
            total += 300
        idx, num = s.conn.get_vring_base(0)
        check(num == total, 'GET_VRING_BASE %d, expected %d' % (num, total))
        host = image_bytes(b.image, 6000 * 512, 300 * 4096)
        exp = b''.join(pattern(3000 + i, 4096) for i in range(300))
        check(host == exp, 'image differs after %d writes' % total)
        return '%d requests through a 1024-entry ring' % total
    finally:
        s.close()


def idle_state(b, settle=1.0):
    """The daemon's open fds once idle (waits until they stop changing)."""
    deadline = time.monotonic() + settle
    prev = b.fds()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        cur = b.fds()
        if cur == prev:
            return cur
        prev = cur
    return prev


def teardown(tap, b, kind):
    if not b.alive():
        tap.result(False, 'teardown: SIGTERM with a ring running', 'daemon ' + b.status())
        return
    s = None
    try:
        s, q = setup_session(b)
    except Exception as e:  # noqa: BLE001
        tap.result(False, 'teardown: session before SIGTERM', str(e))
    rc, removed = b.stop(signal.SIGTERM)
    if s:
        s.close()
    if kind == 'fdvm':
        tap.result(rc == 0 and removed,
                   'teardown: SIGTERM with a ring running: exit 0, socket removed',
                   'exit %s, socket %s' % ('(killed after 5s)' if rc is None else rc,
                                           'removed' if removed else 'left behind'))
    else:
        tap.result(rc == 0, 'teardown: SIGTERM with a ring running: exit 0',
                   'exit %s, socket %s (not part of qsd\'s contract)'
                   % (rc, 'removed' if removed else 'left behind'))


def mq_tests(tap, exe, tmp, image, backends):
    """`IMAGE,queues=4,poll=0`: four queues, no polling (every request
    needs its kick, every completion its call)."""
    b = Backend('fdvm', exe, tmp, image, ',queues=4,poll=0', name='vu-mq')
    backends.append(b)
    try:
        b.start()
        tap.run('queues=4,poll=0: four queues at once', p_multiqueue, b, 4)
        tap.run('queues=4,poll=0: happy path on queue 0 with event index', happy, b,
                SPLIT, 1, (0, 1), event_idx=True, indirect=True, seed=11)
    except Fail as e:
        tap.result(False, 'queues=4,poll=0', str(e))
    finally:
        rc, removed = b.stop()
        tap.result(rc == 0 and removed, 'queues=4,poll=0: SIGTERM: exit 0, socket removed',
                   'exit %s, socket %s' % (rc, 'removed' if removed else 'left behind'))


def ro_tests(tap, exe, tmp, image, backends):
    """`IMAGE,ro`: RO offered, writes refused, image unchanged."""
    b = Backend('fdvm', exe, tmp, image, ',ro', name='vu-ro')
    backends.append(b)
    try:
        b.start()
        before = image_bytes(image, 0, IMAGE_SIZE)
        s, q = setup_session(b)
        try:
            check(s.features & bit(BLK_F_RO), 'RO not offered with ,ro: %#x' % s.features)
            d = BlkDriver(q)
            res = d.run([d.request(T_OUT, 0, b'\x55' * 4096)])
            st = res[0][2]
            check(st != S_OK, 'write on a read-only image completed OK')
            after = image_bytes(image, 0, IMAGE_SIZE)
            check(before == after, 'read-only image changed')
            d.reset()
            res = d.run([d.request(T_IN, 0, None, [4096])])
            check(res[0][2] == S_OK and d.read_data(res[0][0]) == before[:4096],
                  'read on the read-only image: status %d' % res[0][2])
        finally:
            s.close()
        tap.result(True, 'ro: RO offered, write refused with status %d, reads work' % st)
    except Exception as e:  # noqa: BLE001
        tap.result(False, 'ro: read-only image', '%s: %s' % (type(e).__name__, e))
    finally:
        b.stop()


if __name__ == '__main__':
    sys.exit(main())
