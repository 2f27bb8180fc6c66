"""A small vhost-user front-end for tests (Python stdlib only).

Pieces:
  Conn         one connection to a back-end: send any message (any header,
               payload and fds, malformed ones included), receive replies
               with a timeout, see whether the back-end dropped us.
  GuestMemory  "guest RAM": one memfd mapped here with mmap, cut into regions
               with a guest-physical address (GPA) and a made-up front-end
               user address (UVA) each, like QEMU's memory table.
  VirtQueue    a split-virtqueue driver on that memory: descriptor table,
               avail and used rings, kick and call eventfds, event index and
               indirect descriptors.
  BlkDriver    virtio-blk requests (header, data buffers, status byte).

The spec is QEMU's docs/interop/vhost-user.rst; virtio 1.1 for the rings.
"""

import errno
import mmap
import os
import select
import socket
import struct
import time

# --- Messages -------------------------------------------------------------

GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
RESET_OWNER = 4
SET_MEM_TABLE = 5
SET_LOG_BASE = 6
SET_LOG_FD = 7
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
SET_VRING_ERR = 14
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18
GET_CONFIG = 24
SET_CONFIG = 25
GET_INFLIGHT_FD = 31
SET_INFLIGHT_FD = 32
RESET_DEVICE = 34
VRING_KICK = 35
GET_MAX_MEM_SLOTS = 36
ADD_MEM_REG = 37
REM_MEM_REG = 38
SET_STATUS = 39
GET_STATUS = 40

REQUEST_NAMES = {v: k for k, v in list(globals().items())
                 if k.isupper() and isinstance(v, int) and 0 < v < 64}

VERSION = 0x1
FLAG_REPLY = 1 << 2
FLAG_NEED_REPLY = 1 << 3
HDR = struct.Struct('<III')
VRING_NOFD = 1 << 8

# virtio feature bits
F_INDIRECT_DESC = 28
F_EVENT_IDX = 29
F_PROTOCOL_FEATURES = 30
F_VERSION_1 = 32
BLK_F_SIZE_MAX = 1
BLK_F_SEG_MAX = 2
BLK_F_RO = 5
BLK_F_BLK_SIZE = 6
BLK_F_FLUSH = 9
BLK_F_MQ = 12

# protocol feature bits
PF_MQ = 0
PF_REPLY_ACK = 3
PF_CONFIG = 9
PF_INFLIGHT_SHMFD = 12
PF_RESET_DEVICE = 13
PF_CONFIGURE_MEM_SLOTS = 15
PF_STATUS = 16


def bit(n):
    return 1 << n


def msg_name(req):
    return REQUEST_NAMES.get(req, str(req))


class Closed(Exception):
    """The back-end closed (or reset) the connection."""


class Timeout(Exception):
    """Nothing arrived in time."""


class ProtocolError(Exception):
    """The back-end answered something that is not a valid reply."""


class Reply:
    def __init__(self, request, flags, payload, fds):
        self.request, self.flags, self.payload, self.fds = request, flags, payload, fds

    def u64(self):
        if len(self.payload) != 8:
            raise ProtocolError('%s reply: payload of %d bytes, expected 8'
                                % (msg_name(self.request), len(self.payload)))
        return struct.unpack('<Q', self.payload)[0]

    def close_fds(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __repr__(self):
        return 'Reply(%s, flags=%#x, %d bytes, %d fds)' % (
            msg_name(self.request), self.flags, len(self.payload), len(self.fds))


class Conn:
    """One front-end connection. Every wait has a timeout."""

    def __init__(self, path, timeout=3.0):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise
                time.sleep(0.05)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending --
    def send_raw(self, data, fds=()):
        """Send bytes with fds attached to the first byte. Raises Closed."""
        self.sock.settimeout(self.timeout)
        try:
            n = socket.send_fds(self.sock, [data], list(fds)) if fds else self.sock.send(data)
            if n < len(data):
                self.sock.sendall(data[n:])
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))
        except socket.timeout:
            raise Timeout('send blocked for %.1fs' % self.timeout)

    def send(self, request, payload=b'', fds=(), need_reply=False, flags=None, size=None):
        """Send one message. flags/size override the header (for malformed ones)."""
        if flags is None:
            flags = VERSION | (FLAG_NEED_REPLY if need_reply else 0)
        if size is None:
            size = len(payload)
        self.send_raw(HDR.pack(request, flags, size) + payload, fds)

    # -- receiving --
    def _recv_exact(self, n, deadline, want_fds):
        data, fds = b'', []
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                for fd in fds:
                    os.close(fd)
                raise Timeout('no reply in %.1fs (%d of %d bytes)' % (self.timeout, len(data), n))
            self.sock.settimeout(left)
            try:
                if want_fds:
                    chunk, newfds, _, _ = socket.recv_fds(self.sock, n - len(data), 16)
                    fds += newfds
                else:
                    chunk = self.sock.recv(n - len(data))
            except socket.timeout:
                continue
            except ConnectionResetError as e:
                for fd in fds:
                    os.close(fd)
                raise Closed(str(e))
            if not chunk:
                for fd in fds:
                    os.close(fd)
                raise Closed('EOF after %d of %d bytes' % (len(data), n))
            data += chunk
        return data, fds

    def recv(self, timeout=None):
        """Receive one message from the back-end; raises Closed or Timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        hdr, fds = self._recv_exact(HDR.size, deadline, True)
        request, flags, size = HDR.unpack(hdr)
        if size > 4096:
            for fd in fds:
                os.close(fd)
            raise ProtocolError('reply to %s announces %d payload bytes' % (msg_name(request), size))
        payload = b''
        if size:
            payload, more = self._recv_exact(size, deadline, True)
            fds += more
        return Reply(request, flags, payload, fds)

    def reply(self, request, timeout=None):
        """Receive the reply to `request` and check its header."""
        r = self.recv(timeout)
        if r.request != request:
            r.close_fds()
            raise ProtocolError('expected a reply to %s, got %s' % (msg_name(request), r))
        if r.flags & 3 != VERSION or not r.flags & FLAG_REPLY:
            r.close_fds()
            raise ProtocolError('reply to %s has flags %#x' % (msg_name(request), r.flags))
        return r

    def outcome(self, timeout=None):
        """What the back-end does next: ('closed', why), ('reply', Reply) or ('timeout', None)."""
        try:
            return 'reply', self.recv(timeout)
        except Closed as e:
            return 'closed', str(e)
        except Timeout:
            return 'timeout', None

    def is_closed(self, timeout=0.5):
        """True if the peer closes within timeout (nothing else may arrive)."""
        kind, r = self.outcome(timeout)
        if kind == 'reply':
            r.close_fds()
        return kind == 'closed'

    # -- helpers for well-formed messages --
    def request(self, request, payload=b'', fds=(), need_reply=False):
        """Send; if need_reply, wait for the REPLY_ACK and return its value."""
        self.send(request, payload, fds, need_reply)
        if need_reply:
            return self.reply(request).u64()
        return None

    def get_u64(self, request):
        self.send(request)
        return self.reply(request).u64()

    def set_u64(self, request, value, need_reply=False, fds=()):
        return self.request(request, struct.pack('<Q', value), fds, need_reply)

    def vring_state(self, request, index, num, need_reply=False):
        return self.request(request, struct.pack('<II', index, num), (), need_reply)

    def get_vring_base(self, index):
        self.send(GET_VRING_BASE, struct.pack('<II', index, 0))
        r = self.reply(GET_VRING_BASE)
        if len(r.payload) != 8:
            raise ProtocolError('GET_VRING_BASE reply of %d bytes' % len(r.payload))
        return struct.unpack('<II', r.payload)

    def get_config(self, offset, size, flags=0):
        self.send(GET_CONFIG, struct.pack('<III', offset, size, flags) + bytes(size))
        r = self.reply(GET_CONFIG)
        return r.payload

    def get_inflight_fd(self, num_queues, queue_size):
        self.send(GET_INFLIGHT_FD, struct.pack('<QQHH', 0, 0, num_queues, queue_size) + bytes(4))
        r = self.reply(GET_INFLIGHT_FD)
        return r


def pack_region(gpa, size, uva, offset):
    return struct.pack('<QQQQ', gpa, size, uva, offset)


def mem_table_payload(regions, nregions=None):
    """regions: list of (gpa, size, uva, mmap_offset)."""
    n = len(regions) if nregions is None else nregions
    return struct.pack('<II', n, 0) + b''.join(pack_region(*r) for r in regions)


def single_region_payload(gpa, size, uva, offset):
    return struct.pack('<Q', 0) + pack_region(gpa, size, uva, offset)


# --- Guest memory ----------------------------------------------------------

class Region:
    def __init__(self, gpa, size, uva, offset):
        self.gpa, self.size, self.uva, self.offset = gpa, size, uva, offset
        self.next_free = 0

    def tuple(self):
        return (self.gpa, self.size, self.uva, self.offset)


class GuestMemory:
    """Guest RAM: one memfd mapped here, split in regions.

    layout: list of (gpa, size); the regions follow each other in the file.
    Each region gets a front-end "user address" uva_base + file offset +
    i * uva_gap, deliberately different from its GPA and not adjacent to the
    others, so a back-end that confuses GPA and UVA, or ignores mmap_offset,
    reads the wrong bytes.
    """

    def __init__(self, layout, uva_base=0x7f1234500000, uva_gap=0x10000000, name='vu-guest'):
        self.total = sum(s for _, s in layout)
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.total)
        self.mm = mmap.mmap(self.fd, self.total)
        self.regions = []
        off = 0
        for i, (gpa, size) in enumerate(layout):
            self.regions.append(Region(gpa, size, uva_base + off + i * uva_gap, off))
            off += size

    def close(self):
        if self.mm is not None:
            self.mm.close()
            os.close(self.fd)
            self.mm = None

    def table(self):
        return [r.tuple() for r in self.regions]

    def region_of(self, gpa, n=1):
        for r in self.regions:
            if r.gpa <= gpa and gpa + n <= r.gpa + r.size:
                return r
        raise ValueError('GPA %#x+%#x is not in guest memory' % (gpa, n))

    def off(self, gpa, n=1):
        r = self.region_of(gpa, n)
        return r.offset + gpa - r.gpa

    def uva(self, gpa):
        r = self.region_of(gpa)
        return r.uva + gpa - r.gpa

    def read(self, gpa, n):
        o = self.off(gpa, n)
        return bytes(self.mm[o:o + n])

    def write(self, gpa, data):
        o = self.off(gpa, len(data))
        self.mm[o:o + len(data)] = data

    def get(self, fmt, gpa):
        s = struct.calcsize(fmt)
        return struct.unpack(fmt, self.read(gpa, s))[0]

    def put(self, fmt, gpa, v):
        self.write(gpa, struct.pack(fmt, v))

    def alloc(self, size, align=16, region=0):
        """Bump allocator inside one region; returns a GPA."""
        r = self.regions[region]
        start = (r.next_free + align - 1) & ~(align - 1)
        if start + size > r.size:
            raise MemoryError('region %d full' % region)
        r.next_free = start + size
        return r.gpa + start

    def mark(self):
        return [r.next_free for r in self.regions]

    def release(self, mark):
        for r, m in zip(self.regions, mark):
            r.next_free = m

    def snapshot(self):
        return bytes(self.mm[:])


# --- Split virtqueue driver ------------------------------------------------

VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_USED_F_NO_NOTIFY = 1


def need_event(event_idx, new_idx, old_idx):
    return ((new_idx - event_idx - 1) & 0xffff) < ((new_idx - old_idx) & 0xffff)


class VirtQueue:
    def __init__(self, mem, index=0, size=256, region=0, event_idx=False, indirect=False):
        self.mem, self.index, self.size = mem, index, size
        self.event_idx, self.indirect = event_idx, indirect
        self.desc = mem.alloc(16 * size, 4096, region)
        self.avail = mem.alloc(6 + 2 * size, 2, region)
        self.used = mem.alloc(6 + 8 * size, 4096, region)
        for a, n in ((self.desc, 16 * size), (self.avail, 6 + 2 * size), (self.used, 6 + 8 * size)):
            mem.write(a, bytes(n))
        self.free = list(range(size))
        self.chains = {}          # head -> descriptor ids to free
        self.avail_idx = 0        # next avail index (free-running u16)
        self.last_used = 0
        self.kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.kicks = 0

    def close(self):
        for fd in (self.kick_fd, self.call_fd):
            if fd is not None:
                os.close(fd)
        self.kick_fd = self.call_fd = None

    def addr_payload(self, flags=0, desc=None, used=None, avail=None, log=0):
        m = self.mem
        return struct.pack('<IIQQQQ', self.index, flags,
                           m.uva(self.desc) if desc is None else desc,
                           m.uva(self.used) if used is None else used,
                           m.uva(self.avail) if avail is None else avail, log)

    def setup(self, conn, need_reply=False, base=0, enable=True):
        """QEMU's order: NUM, BASE, ADDR, KICK, CALL, ENABLE. Returns the acks."""
        acks = []
        acks.append(conn.vring_state(SET_VRING_NUM, self.index, self.size, need_reply))
        acks.append(conn.vring_state(SET_VRING_BASE, self.index, base, need_reply))
        acks.append(conn.request(SET_VRING_ADDR, self.addr_payload(), (), need_reply))
        acks.append(conn.set_u64(SET_VRING_KICK, self.index, need_reply, [self.kick_fd]))
        acks.append(conn.set_u64(SET_VRING_CALL, self.index, need_reply, [self.call_fd]))
        if enable:
            acks.append(conn.vring_state(SET_VRING_ENABLE, self.index, 1, need_reply))
        self.avail_idx = self.last_used = base
        self.mem.put('<H', self.avail + 2, base & 0xffff)
        self.mem.put('<H', self.used + 2, base & 0xffff)
        return acks

    def write_desc(self, i, addr, length, flags, nxt, table=None):
        base = self.desc if table is None else table
        self.mem.write(base + 16 * i, struct.pack('<QIHH', addr, length, flags, nxt))

    def add(self, bufs, indirect=None):
        """bufs: list of (gpa, len, device_writable). Returns the head id.

        With indirect (default: self.indirect) the chain goes in an indirect
        table allocated in guest memory and takes one ring descriptor."""
        if indirect is None:
            indirect = self.indirect
        if indirect:
            table = self.mem.alloc(16 * len(bufs), 16)
            for i, (a, n, w) in enumerate(bufs):
                last = i == len(bufs) - 1
                self.write_desc(i, a, n, (0 if last else VRING_DESC_F_NEXT) |
                                (VRING_DESC_F_WRITE if w else 0), 0 if last else i + 1, table)
            head = self.free.pop(0)
            self.write_desc(head, table, 16 * len(bufs), VRING_DESC_F_INDIRECT, 0)
            self.chains[head] = [head]
            return head
        if len(bufs) > len(self.free):
            raise MemoryError('virtqueue full')
        ids = [self.free.pop(0) for _ in bufs]
        for k, (a, n, w) in enumerate(bufs):
            last = k == len(bufs) - 1
            self.write_desc(ids[k], a, n, (0 if last else VRING_DESC_F_NEXT) |
                            (VRING_DESC_F_WRITE if w else 0), 0 if last else ids[k + 1])
        self.chains[ids[0]] = ids
        return ids[0]

    def publish(self, heads):
        """Put heads in the avail ring, then move avail->idx (after the entries)."""
        old = self.avail_idx
        for h in heads:
            self.mem.put('<H', self.avail + 4 + 2 * (self.avail_idx % self.size), h)
            self.avail_idx = (self.avail_idx + 1) & 0xffff
        if self.event_idx:   # interrupt us at the next used entry
            self.mem.put('<H', self.avail + 4 + 2 * self.size, self.last_used)
        self.mem.put('<H', self.avail + 2, self.avail_idx)
        return old

    def set_avail_idx(self, idx):
        self.avail_idx = idx & 0xffff
        self.mem.put('<H', self.avail + 2, self.avail_idx)

    def kick_needed(self, old):
        if self.event_idx:
            ev = self.mem.get('<H', self.used + 4 + 8 * self.size)
            return need_event(ev, self.avail_idx, old)
        return not self.mem.get('<H', self.used) & VRING_USED_F_NO_NOTIFY

    def kick(self, old=None, force=False):
        if force or old is None or self.kick_needed(old):
            os.eventfd_write(self.kick_fd, 1)
            self.kicks += 1

    def submit(self, chains, force_kick=False):
        heads = [self.add(c) for c in chains]
        old = self.publish(heads)
        self.kick(old, force_kick)
        return heads

    def used_idx(self):
        return self.mem.get('<H', self.used + 2)

    def pending_used(self):
        return (self.used_idx() - self.last_used) & 0xffff

    def wait_call(self, timeout):
        """Wait for the call eventfd; True if it fired."""
        r, _, _ = select.select([self.call_fd], [], [], max(timeout, 0))
        if not r:
            return False
        try:
            os.eventfd_read(self.call_fd)
        except BlockingIOError:
            return False
        return True

    def _drain(self, out, n):
        while self.pending_used() and len(out) < n:
            e = self.used + 4 + 8 * (self.last_used % self.size)
            i, ln = struct.unpack('<II', self.mem.read(e, 8))
            self.last_used = (self.last_used + 1) & 0xffff
            out.append((i, ln))
            if i in self.chains:
                self.free.extend(self.chains.pop(i))

    def wait_used(self, n, timeout=3.0, strict_call=True):
        """Wait until n more used entries are there; returns [(id, len)].

        strict_call: entries are only taken after the call eventfd fired (or
        when they raced with our used_event update, as Linux allows), so a
        back-end that fills the used ring but never signals fails here.
        Raises Timeout saying what was seen."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            if not strict_call:
                self._drain(out, n)
            if len(out) >= n:
                return out
            if self.event_idx:
                self.mem.put('<H', self.avail + 4 + 2 * self.size, self.last_used)
                if self.pending_used():   # completed before used_event moved
                    self._drain(out, n)
                    continue
            left = deadline - time.monotonic()
            if left <= 0 or not self.wait_call(left):
                pending = self.pending_used()
                raise Timeout('%d of %d completions in %.1fs (used idx %d, %s)' % (
                    len(out), n, timeout, self.used_idx(),
                    '%d used entries written but call not signalled' % pending if pending
                    else 'nothing in the used ring'))
            self._drain(out, n)


# --- virtio-blk ------------------------------------------------------------

T_IN = 0
T_OUT = 1
T_FLUSH = 4
T_GET_ID = 8
S_OK = 0
S_IOERR = 1
S_UNSUPP = 2


class BlkRequest:
    def __init__(self, hdr, data, status, type_, sector):
        self.hdr, self.data, self.status, self.type, self.sector = hdr, data, status, type_, sector


class BlkDriver:
    """virtio-blk requests on a VirtQueue. Buffers come from mem.alloc in
    the given region(s); call reset() to reuse the space after a batch."""

    def __init__(self, vq, data_region=0):
        self.vq, self.mem, self.data_region = vq, vq.mem, data_region
        self.mark = self.mem.mark()

    def reset(self):
        self.mem.release(self.mark)

    def request(self, type_, sector, data=None, lengths=(), seg_region=None):
        """Build a request chain (not published). For T_OUT, data is written in
        buffers of `lengths` (or one buffer); for T_IN/T_GET_ID, `lengths`
        device-writable buffers are allocated. Returns (BlkRequest, bufs)."""
        m = self.mem
        reg = self.data_region if seg_region is None else seg_region
        hdr = m.alloc(16, 16)
        m.write(hdr, struct.pack('<IIQ', type_, 0, sector))
        chain = [(hdr, 16, False)]
        segs = []
        if type_ == T_OUT:
            lengths = lengths or [len(data)]
            pos = 0
            for n in lengths:
                a = m.alloc(n, 512, reg)
                m.write(a, data[pos:pos + n])
                pos += n
                segs.append((a, n))
                chain.append((a, n, False))
            assert pos == len(data)
        else:
            for n in lengths:
                a = m.alloc(n, 512, reg)
                m.write(a, b'\xa5' * n)
                segs.append((a, n))
                chain.append((a, n, True))
        st = m.alloc(1, 1)
        m.write(st, b'\xee')
        chain.append((st, 1, True))
        return BlkRequest(hdr, segs, st, type_, sector), chain

    def run(self, reqs_chains, timeout=3.0):
        """Publish the chains, kick, wait for all; returns {head: (req, len, status)}."""
        heads = self.vq.submit([c for _, c in reqs_chains])
        by_head = dict(zip(heads, [r for r, _ in reqs_chains]))
        done = self.vq.wait_used(len(heads), timeout)
        out = {}
        for i, ln in done:
            if i not in by_head:
                raise ProtocolError('used ring names id %d, not a head we published' % i)
            r = by_head[i]
            out[i] = (r, ln, self.mem.read(r.status, 1)[0])
        return [out[h] for h in heads]

    def read_data(self, req):
        return b''.join(self.mem.read(a, n) for a, n in req.data)
