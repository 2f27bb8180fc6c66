#!/usr/bin/env python3
"""Writes the seed inputs of the pci, virtio_pci, virtio_blk, uart and
virtqueue fuzz targets under corpus/ (each a driver session as the target
decodes it: see the comment at the top of its .c file). Run from fuzz/."""
import os
import struct

def u8(v): return struct.pack('<B', v & 0xff)
def u16(v): return struct.pack('<H', v & 0xffff)
def u32(v): return struct.pack('<I', v & 0xffffffff)
def u64(v): return struct.pack('<Q', v & 0xffffffffffffffff)

def op(k, mod, set_bits=0, clear_bits=0):
    """An operation byte b with b % mod == k, the set bits set, the clear ones clear."""
    for b in range(256):
        if b % mod == k and b & set_bits == set_bits and not b & clear_bits:
            return u8(b)
    raise ValueError((k, mod, set_bits, clear_bits))

def write(target, name, data):
    os.makedirs(os.path.join('corpus', target), exist_ok=True)
    with open(os.path.join('corpus', target, name), 'wb') as f:
        f.write(data)

# ---- pci (ops % 12) ----
ECAM_SLOT = lambda a: a  # op 2 takes a u32: reg | slot << 12 (slot 0-3)
def pci_cfg_read(slot, reg, size_bits=2):
    return op(2, 12, size_bits << 4, 0xc0 | ((~size_bits & 3) << 4)) + u32(reg | slot << 12)
def pci_cfg_write(slot, reg, val, size_bits=2):
    return op(2, 12, 0x80 | size_bits << 4, 0x40 | ((~size_bits & 3) << 4)) + u32(reg | slot << 12) + u32(val)

def pci_session(h0, h1, h2, slot=1, caps=b'\x00'):
    s = u8(h0) + u8(h1) + u8(h2) + caps
    # the address register, aimed at slot 1 register 0, then the data port
    s += op(0, 12, 0xc0) + u32(slot)
    s += op(1, 12, 0x20, 0x90) + u8(0)
    # BAR sizing of each BAR, back where it was
    for bar in range(6):
        s += op(3, 12) + u8(bar) + u8(0)
    # BAR0 and BAR2 moved
    s += op(3, 12) + u8(0) + u8(1) + u32(0xd0000000)
    s += op(3, 12) + u8(2) + u8(1) + u32(0xd1000000)
    # decoding off, on
    s += op(8, 12) + u16(0)
    s += op(8, 12) + u16(7)
    # MSI-X: vector 0 address, data, unmasked; enable; raise it; the PBA
    s += op(6, 12) + u8(0) + u8(0) + u8(2) + u64(0xfee00000)
    s += op(6, 12) + u8(0) + u8(8) + u8(2) + u64(0x31)
    s += op(6, 12) + u8(0) + u8(12) + u8(2) + u64(0)
    s += op(9, 12) + u16(0x8000)
    s += op(7, 12) + u8(0)
    s += op(9, 12) + u16(0xc000)
    s += op(7, 12) + u8(0)
    s += op(11, 12, 0x30) + u8(0)
    s += op(9, 12) + u16(0)
    # BAR accesses in each BAR
    for bar in (0, 1, 2, 4):
        s += op(4, 12) + u8(bar) + u32(0x10) + u8(2) + u8(1) + u64(0x1234)
        s += op(4, 12) + u8(bar) + u32(0x10) + u8(2) + u8(0) + u64(0)
    # ECAM reads of the capability list
    s += pci_cfg_read(slot, 0x34) + pci_cfg_read(slot, 0x40) + pci_cfg_read(slot, 0x50)
    s += pci_cfg_write(slot, 0x3c, 0x0b, 0)
    return s

write('pci', 'seed-msix-bar0', pci_session(0x00, 0x00, 0x83))
write('pci', 'seed-msix-bar2', pci_session(0x41, 0x25, 0x3f,
      caps=b'\x01' + u8(0x09) + u8(14) + bytes(b for i in range(16) for b in (i, 0xff))))
write('pci', 'seed-nomsix', pci_session(0x82, 0xff, 0x80))

# ---- virtio_pci (ops % 14) ----
def vp_common_write(field, val):  # field index in the target's table
    return op(0, 14, 0, 0xc0) + u8(field) + val
def vp_status(step):
    return op(3, 14, 0, 0x80) + u8(step)

def vp_session(h0, h1, nq, extra=b''):
    s = u8(h0) + u8(h1)
    s += vp_status(1) + vp_status(2)                      # ACK, DRIVER
    s += op(4, 14) + u64(1 << 28 | 1 << 29)               # features (+VERSION_1)
    s += vp_status(3)                                     # FEATURES_OK
    s += op(2, 14, 0, 0x80) + u8(6)                       # read status back
    for q in range(nq):
        # select q, size 8, rings at 0x1000 * (q + 1) (addresses are u16 << 2)
        base = 0x10000 * (q + 1)
        s += op(5, 14, 0, 0xc0) + u8(q | q << 3) + u8(3) + u16(base >> 2) + u16((base + 0x1000) >> 2) + u16((base + 0x2000) >> 2)
    s += op(11, 14, 0x80) + u16(0) + u8(2) + u64(0xfee00000)     # MSI-X vector 0
    s += op(12, 14) + u8(4) + u32(0x8000)                 # MSI-X enable
    # descriptor 0 of queue 0: 16 bytes at 0x8000, device-writable; avail ring: head 0, idx 1
    s += op(9, 14) + u16(0x10000 >> 2) + u8(16) + u64(0x8000) + u32(16) + u16(2) + u16(0)
    s += op(9, 14) + u16(0x11000 >> 2) + u8(6) + u16(0) + u16(1) + u16(0)
    s += vp_status(4)                                     # DRIVER_OK
    s += op(6, 14, 0, 0x80) + u8(0)                       # notify queue 0
    s += op(10, 14) + u8(7)                               # device pass
    s += op(7, 14) + op(8, 14, 0, 0x80) + u8(0) + u8(2)   # ISR, config
    s += op(12, 14, 0x80) + u8(1) + u32(5)                # BAR0 moves while started
    s += op(6, 14, 0, 0x80) + u8(0)
    s += op(10, 14) + u8(7)
    s += extra
    s += vp_status(0)                                     # reset
    s += op(2, 14, 0, 0x80) + u8(7)                       # generation
    return s

write('virtio_pci', 'seed-start-kernel', vp_session(0x65, 0x13, 2))
write('virtio_pci', 'seed-start-userspace', vp_session(0x09, 0x08, 1, op(13, 14) + u8(0)))
write('virtio_pci', 'seed-refuse', vp_session(0x80 | 0x0c, 0x08, 1))

# ---- virtio_blk (ops % 8): header: log2 size | 0x10 indirect | 0x20 read-only ----
def blk_req(how, segs, typ_sector, lens=(), extra=b''):
    s = op(0, 8) + u8(how) + u8(segs - 1) + typ_sector
    if how & 0x10:
        s += u8(extra[0] if extra else 0)
    for l in lens:
        s += u8(l)
    if how & 0x04:
        s += u8(2)
    return s
RUN = op(3, 8)
def sector(i):  # an index into the target's edges
    return u8(i)
blk = u8(0x08 | 0x10)
blk += blk_req(1, 2, sector(0), [3])        # write 512 at 0
blk += blk_req(0, 2, sector(0), [3])        # read 512 at 0
blk += blk_req(2, 1, sector(0))             # flush
blk += blk_req(3, 2, sector(0), [6])        # get id
blk += RUN
blk += blk_req(0, 2, sector(2), [4])        # read 513 at the last sector
blk += blk_req(0, 2, sector(3), [0])        # read nothing at the end
blk += blk_req(0, 3, sector(2), [3, 3])     # two sectors past the end
blk += blk_req(4, 2, sector(1), [3])        # unsupported type
blk += blk_req(0x40, 2, sector(1), [3])     # indirect read
blk += blk_req(0x08 | 1, 2, sector(1), [3]) # a write with its data device-writable
blk += blk_req(0x10 | 0, 2, sector(1), [3], b'\x08')  # a short header
blk += RUN
write('virtio_blk', 'seed-requests', blk)
write('virtio_blk', 'seed-readonly', u8(0x04 | 0x20) + blk_req(1, 2, sector(0), [3]) + blk_req(0, 2, sector(0), [3]) + RUN)
write('virtio_blk', 'seed-hostile', u8(0x03) + blk_req(0, 2, sector(0), [3]) + op(5, 8) + u16(1) + u16(0x100) + u16(512) + u16(3) + u16(7) + op(6, 8) + u16(9) + RUN)

# ---- uart ----
def uw(off, v): return u8(0x08 | off) + u8(v)
def ur(off): return u8(off)
uart = uw(3, 0x80) + uw(0, 1) + uw(1, 0) + ur(0) + ur(1) + uw(3, 0x03) + uw(2, 0xc7) + uw(4, 0x0b) + uw(1, 0x0f)
uart += b''.join(uw(0, c) for c in b'hello\r\n') + ur(5) + ur(6) + ur(2) + uw(7, 0x5a) + ur(7)
uart += u8(0xe3) + u16(0x4142) + u8(0xd4) + u8(0xf8) + u8(0xcb) + u8(0x11)  # wider and beside
write('uart', 'seed-init', uart)
write('uart', 'seed-long-line', b''.join(uw(0, 0x41 + i % 26) for i in range(300)) + uw(0, 10))

# ---- virtqueue, device mode (flag 4): 8 entries, rings as seed-chain lays them out ----
vq = bytearray(0x200)
vq[0:8] = bytes([3, 4 | 2, 0x10, 0, 0, 0, 0, 0])
# descriptors at 0x100: a readable and a writable buffer inside the input
for i, (addr, ln, fl, nx) in enumerate([(0x180, 16, 1, 1), (0x190, 32, 2, 0), (0x1b0, 8, 2, 0)]):
    vq[0x100 + 16 * i:0x110 + 16 * i] = struct.pack('<QIHH', addr, ln, fl, nx)
# the op bytes after the header: push, unpop, batch, batch (pairs of op, arg)
vq[8:24] = bytes([0, 1, 1, 0, 2, 4, 6, 0, 0x12, 0, 0x28, 1, 0x40, 3, 0, 0])
open('corpus/virtqueue/seed-device', 'wb').write(bytes(vq))
