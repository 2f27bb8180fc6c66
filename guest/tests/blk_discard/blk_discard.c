/*
 * virtio-blk discard, write-zeroes and read-only, from the guest.
 *
 * By default the device must offer discard and write-zeroes: the guest
 * writes a 2 MiB area (sectors 8192..12287) with a pattern, zeroes its
 * first half (no unmap) and reads zeroes there and the pattern after,
 * discards the second half, then zeroes the whole area with unmap in two
 * segments and reads zeroes; malformed range requests get the status the
 * spec gives them. The host then finds the area's blocks freed
 * (tests/cli/blk_image.py). "nodiscard": the device must offer neither and
 * answer both UNSUPP. "ro": the device must be read-only: reads work,
 * writes, discards and write-zeroes fail, and it offers no range commands.
 */
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "virtio.h"

#define F_RO 5
#define F_BLK_SIZE 6
#define F_FLUSH 9
#define F_DISCARD 13
#define F_WRITE_ZEROES 14
#define SECTOR 512
#define AREA 8192
#define AREA_SECTORS 4096
#define CHUNK 65536

struct seg {
	uint64_t sector;
	uint32_t num_sectors, flags;
};

static struct vdev dev;
static struct vq vq;
static struct vblk_hdr hdr;
static volatile uint8_t status;
static uint8_t buf[CHUNK] __attribute__((aligned(4096)));
static struct seg segs[20];

/* One request, waited for: header, then data (device-readable unless
 * in), then the status byte. */
static uint8_t request(uint32_t type, uint64_t sector, void *data, uint32_t len, bool in)
{
	hdr = (struct vblk_hdr){ type, 0, sector };
	status = 0xff;
	struct vbuf b[3] = { { (uint64_t)&hdr, sizeof(hdr), false } };
	unsigned n = 1;
	if (len)
		b[n++] = (struct vbuf){ (uint64_t)data, len, in };
	b[n++] = (struct vbuf){ (uint64_t)&status, 1, true };
	if (!vq_add(&vq, b, n, &hdr))
		return 0xfe;
	vq_kick(&vq);
	while (!vq_get(&vq, 0))
		__builtin_ia32_pause();
	return status;
}

static uint8_t ranges(uint32_t type, unsigned n, uint32_t len)
{
	return request(type, 0, segs, len ? len : n * (uint32_t)sizeof(segs[0]), false);
}

static uint32_t pattern(uint64_t sector, unsigned word)
{
	uint64_t x = (sector + 1) * 0x9e3779b97f4a7c15ull ^ word * 0xbf58476d1ce4e5b9ull;
	return (uint32_t)(x >> 29) | 1; /* never 0: zeroes are told apart */
}

/* Writes the pattern over [s, s + n) sectors; how many requests failed. */
static unsigned write_pattern(uint64_t s, unsigned n)
{
	unsigned bad = 0;
	for (unsigned done = 0; done < n; done += CHUNK / SECTOR) {
		for (unsigned k = 0; k < CHUNK / SECTOR; k++)
			for (unsigned w = 0; w < SECTOR / 4; w++)
				((uint32_t *)buf)[k * SECTOR / 4 + w] = pattern(s + done + k, w);
		bad += request(VBLK_T_OUT, s + done, buf, CHUNK, false) != VBLK_S_OK;
	}
	return bad;
}

/* Reads [s, s + n) sectors: how many are not zeroes (zero) or not the
 * pattern; a failed read counts all its sectors. */
static unsigned check(uint64_t s, unsigned n, bool zero)
{
	unsigned bad = 0;
	for (unsigned done = 0; done < n; done += CHUNK / SECTOR) {
		if (request(VBLK_T_IN, s + done, buf, CHUNK, true) != VBLK_S_OK) {
			bad += CHUNK / SECTOR;
			continue;
		}
		for (unsigned k = 0; k < CHUNK / SECTOR; k++) {
			bool ok = true;
			for (unsigned w = 0; w < SECTOR / 4 && ok; w++)
				ok = ((uint32_t *)buf)[k * SECTOR / 4 + w] ==
				     (zero ? 0 : pattern(s + done + k, w));
			bad += !ok;
		}
	}
	return bad;
}

static void seg(unsigned i, uint64_t sector, uint32_t n, uint32_t flags)
{
	segs[i] = (struct seg){ sector, n, flags };
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	bool ro = rt_cmdline_has("ro"), nodiscard = rt_cmdline_has("nodiscard");
	rt_tap_plan(ro || nodiscard ? 4 : 10);
	if (!virtio_find(2, 0, &dev))
		rt_needs("a virtio-blk disk", "fdvm run --blk disk.img GUEST.elf (16 MiB or more)");
	virtio_pool_reset();
	uint64_t want = 1ull << F_RO | 1ull << F_BLK_SIZE | 1ull << F_FLUSH | 1ull << F_DISCARD |
			1ull << F_WRITE_ZEROES | 1ull << VIRTIO_F_EVENT_IDX;
	bool up = virtio_negotiate(&dev, want) && virtio_setup_vq(&dev, &vq, 0, 16, 0xffff);
	if (up)
		virtio_driver_ok(&dev);
	uint64_t f = dev.features, cap = virtio_cfg64(&dev, 0);
	bool has_ranges = f >> F_DISCARD & 1 && f >> F_WRITE_ZEROES & 1;
	rt_tap_ok(up && cap >= AREA + AREA_SECTORS, "virtio-blk up, %lu sectors, features 0x%lx",
		  (unsigned long)cap, (unsigned long)f);
	if (!up || cap < AREA + AREA_SECTORS)
		return rt_tap_done();

	if (ro || nodiscard) {
		rt_tap_ok(!has_ranges && !(f >> F_DISCARD & 1) && !(f >> F_WRITE_ZEROES & 1) &&
			  (f >> F_RO & 1) == ro,
			  "%s: read-only %d, no discard, no write-zeroes offered", ro ? "ro" : "nodiscard",
			  (int)(f >> F_RO & 1));
		seg(0, AREA, 8, 0);
		uint8_t d = ranges(VBLK_T_DISCARD, 1, 0), z = ranges(VBLK_T_WRITE_ZEROES, 1, 0);
		rt_tap_ok(d == VBLK_S_UNSUPP && z == VBLK_S_UNSUPP, "discard and write-zeroes are UNSUPP (%u, %u)", d, z);
		if (ro) {
			uint8_t r = request(VBLK_T_IN, AREA, buf, CHUNK, true);
			uint8_t w = request(VBLK_T_OUT, AREA, buf, CHUNK, false);
			rt_tap_ok(r == VBLK_S_OK && w == VBLK_S_IOERR, "a read works (%u), a write fails with IOERR (%u)", r, w);
		} else {
			rt_tap_ok(write_pattern(AREA, 256) == 0 && check(AREA, 256, false) == 0,
				  "reads and writes work");
		}
		return rt_tap_done();
	}

	uint32_t max_dsec = virtio_cfg32(&dev, 36), max_dseg = virtio_cfg32(&dev, 40);
	uint32_t max_zsec = virtio_cfg32(&dev, 48), max_zseg = virtio_cfg32(&dev, 52);
	uint8_t may_unmap = virtio_cfg8(&dev, 56);
	rt_tap_ok(has_ranges && max_dsec >= AREA_SECTORS && max_dseg >= 2 && max_zsec >= AREA_SECTORS &&
		  max_zseg >= 2 && may_unmap == 1,
		  "discard and write-zeroes offered: %u sectors x %u segments, %u x %u, may unmap %u",
		  max_dsec, max_dseg, max_zsec, max_zseg, may_unmap);

	unsigned bad = write_pattern(AREA, AREA_SECTORS);
	uint8_t fl = request(VBLK_T_FLUSH, 0, 0, 0, false);
	rt_tap_ok(!bad && fl == VBLK_S_OK && check(AREA, AREA_SECTORS, false) == 0,
		  "2 MiB written with a pattern and read back");

	/* Buffers and a sector that keep to no alignment but the sector's
	 * (cache=none bounces them): 4 sectors from buf + 8 to sector
	 * 16385, read back to another odd address; the neighbours untouched. */
	uint8_t *src = buf + 8, *dst = buf + CHUNK / 2 + 24;
	for (unsigned i = 0; i < 4 * SECTOR; i++)
		src[i] = (uint8_t)(i * 7 + 1);
	uint8_t w = request(VBLK_T_OUT, 16385, src, 4 * SECTOR, false);
	memset(dst, 0, 4 * SECTOR);
	uint8_t r = request(VBLK_T_IN, 16385, dst, 4 * SECTOR, true);
	bool same = !memcmp(src, dst, 4 * SECTOR);
	unsigned around = 0;
	for (unsigned k = 0; k < 2; k++) {
		uint8_t *one = buf + 4096;
		memset(one, 0xaa, SECTOR);
		uint8_t st = request(VBLK_T_IN, k ? 16389 : 16384, one, SECTOR, true);
		for (unsigned i = 0; i < SECTOR; i++)
			if (st != VBLK_S_OK || one[i]) {
				around++;
				break;
			}
	}
	rt_tap_ok(w == VBLK_S_OK && r == VBLK_S_OK && same && !around,
		  "odd buffers at an odd sector: write %u, read %u, same data %d, %u neighbours changed",
		  w, r, same, around);

	seg(0, AREA, AREA_SECTORS / 2, 0);
	uint8_t z = ranges(VBLK_T_WRITE_ZEROES, 1, 0);
	unsigned zbad = check(AREA, AREA_SECTORS / 2, true),
		 pbad = check(AREA + AREA_SECTORS / 2, AREA_SECTORS / 2, false);
	rt_tap_ok(z == VBLK_S_OK && !zbad && !pbad,
		  "write-zeroes on the first MiB: status %u, %u sectors not zero, %u of the rest changed",
		  z, zbad, pbad);

	seg(0, AREA + AREA_SECTORS / 2, AREA_SECTORS / 2, 0);
	uint8_t d = ranges(VBLK_T_DISCARD, 1, 0);
	rt_tap_ok(d == VBLK_S_OK, "discard of the second MiB: status %u", d);

	seg(0, AREA, AREA_SECTORS / 2, 1);
	seg(1, AREA + AREA_SECTORS / 2, AREA_SECTORS / 2, 1);
	z = ranges(VBLK_T_WRITE_ZEROES, 2, 0);
	zbad = check(AREA, AREA_SECTORS, true);
	rt_tap_ok(z == VBLK_S_OK && !zbad, "write-zeroes with unmap, two segments, the whole area: status %u, %u sectors not zero",
		  z, zbad);

	seg(0, AREA, 8, 1);
	uint8_t a = ranges(VBLK_T_DISCARD, 1, 0);
	seg(0, cap - 4, 8, 0);
	uint8_t b = ranges(VBLK_T_WRITE_ZEROES, 1, 0);
	for (unsigned i = 0; i < 20; i++)
		seg(i, AREA, 1, 0);
	uint8_t c = ranges(VBLK_T_DISCARD, max_dseg + 1 <= 20 ? max_dseg + 1 : 20, 0);
	uint8_t e = ranges(VBLK_T_WRITE_ZEROES, 1, 8);
	seg(0, AREA, 8, 4);
	uint8_t g = ranges(VBLK_T_WRITE_ZEROES, 1, 0);
	rt_tap_ok(a == VBLK_S_UNSUPP && b == VBLK_S_IOERR && (max_dseg >= 20 || c == VBLK_S_IOERR) && e == VBLK_S_IOERR &&
		  g == VBLK_S_UNSUPP,
		  "bad ranges: discard with unmap UNSUPP (%u), past the end IOERR (%u), too many segments IOERR (%u), a partial segment IOERR (%u), a reserved flag UNSUPP (%u)",
		  a, b, c, e, g);
	rt_tap_ok(check(AREA, AREA_SECTORS, true) == 0, "the area still reads zeroes");
	rt_tap_ok(request(VBLK_T_FLUSH, 0, 0, 0, false) == VBLK_S_OK, "flush");
	rt_printf("# area: sectors %u..%u written, then zeroed with unmap\n", AREA, AREA + AREA_SECTORS - 1);
	return rt_tap_done();
}
