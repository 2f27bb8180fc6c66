/*
 * The CMOS RTC at 0x70/0x71: 128 bytes of CMOS, the clock registers read
 * from the host's UTC time at each read (BCD, 24-hour, as a PC's BIOS
 * leaves it), status registers that say the clock is valid and never in an
 * update, the memory sizes a BIOS would store, and a valid checksum over
 * 0x10-0x2d. Writes are kept (but for the clock and status C/D), so a guest
 * can set alarms and flags it will read back; the time itself follows the
 * host. No interrupts.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fdvm/abi.h"
#include "../vm_priv.h"

struct fdvm_rtc {
	struct fdvm_vm *vm;
	struct fdvm_io_region *region;
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[128];
};

#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d

static uint8_t bcd(int v) { return (uint8_t)((v / 10) << 4 | (v % 10)); }

/*
 * UTC from the epoch's seconds, by the days-to-civil arithmetic, not
 * gmtime_r: glibc's may read the time zone files on first use, which the
 * vCPU thread's seccomp filter does not allow (and UTC needs none).
 */
static void utc(time_t t, struct tm *tm)
{
	int64_t days = t / 86400, rem = t % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	tm->tm_hour = (int)(rem / 3600);
	tm->tm_min = (int)(rem / 60 % 60);
	tm->tm_sec = (int)(rem % 60);
	tm->tm_wday = (int)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
	int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
	tm->tm_mday = (int)d;
	tm->tm_mon = (int)m - 1;
	tm->tm_year = (int)(yoe + era * 400 + (m <= 2)) - 1900;
}

/* Lock held. */
static uint8_t cmos_read(struct fdvm_rtc *r, uint8_t i)
{
	struct timespec ts;
	struct tm tm;
	if (i <= 9 || i == FDVM_CMOS_CENTURY) {
		clock_gettime(CLOCK_REALTIME, &ts);
		utc(ts.tv_sec, &tm);
	}
	switch (i) {
	case 0x00: return bcd(tm.tm_sec);
	case 0x02: return bcd(tm.tm_min);
	case 0x04: return bcd(tm.tm_hour);
	case 0x06: return bcd(tm.tm_wday + 1);
	case 0x07: return bcd(tm.tm_mday);
	case 0x08: return bcd(tm.tm_mon + 1);
	case 0x09: return bcd(tm.tm_year % 100);
	case FDVM_CMOS_CENTURY: return bcd((tm.tm_year + 1900) / 100);
	case REG_A: return 0x26;	/* 32.768 kHz, 1024 Hz; UIP never set */
	case REG_C: return 0;		/* no interrupt flags */
	case REG_D: return 0x80;	/* VRT: the clock's power is good */
	default: return r->cmos[i & 0x7f];
	}
}

static void checksum(struct fdvm_rtc *r)
{
	unsigned sum = 0;
	for (unsigned i = 0x10; i <= 0x2d; i++)
		sum += r->cmos[i];
	r->cmos[0x2e] = (uint8_t)(sum >> 8);
	r->cmos[0x2f] = (uint8_t)sum;
}

static uint64_t rtc_read(void *opaque, uint64_t off, unsigned size)
{
	struct fdvm_rtc *r = opaque;
	uint64_t v;
	(void)size;
	pthread_mutex_lock(&r->lock);
	v = off == 0 ? r->index : cmos_read(r, r->index & 0x7f);
	pthread_mutex_unlock(&r->lock);
	return v;
}

static void rtc_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	struct fdvm_rtc *r = opaque;
	uint8_t i;
	(void)size;
	pthread_mutex_lock(&r->lock);
	if (off == 0) {
		r->index = (uint8_t)value; /* bit 7: NMI off, kept as written */
	} else {
		i = r->index & 0x7f;
		/* The clock follows the host; C and D are read-only. */
		if (i > 9 && i != REG_C && i != REG_D && i != FDVM_CMOS_CENTURY) {
			if (i == REG_B)
				value = (value & ~0x06u) | 0x02; /* stays BCD, 24-hour */
			r->cmos[i] = (uint8_t)value;
			if (i >= 0x10 && i <= 0x2d)
				checksum(r);
		}
	}
	pthread_mutex_unlock(&r->lock);
}

static const struct fdvm_io_ops rtc_ops = { .read = rtc_read, .write = rtc_write };

int fdvm_rtc_init(struct fdvm_vm *vm, struct fdvm_rtc **out)
{
	struct fdvm_rtc *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->vm = vm;
	pthread_mutex_init(&r->lock, NULL);
	r->cmos[REG_B] = 0x02; /* 24-hour, BCD, no interrupts */
	/* What a BIOS stores: 640 KiB base memory; extended memory in KiB
	 * (1-16 MiB, at most 0xffff); above 16 MiB in 64 KiB blocks (0x34). */
	uint64_t low = vm->ram[0].size;
	uint64_t ext_kb = low > (1 << 20) ? (low - (1 << 20)) >> 10 : 0;
	if (ext_kb > 0xffff)
		ext_kb = 0xffff;
	uint64_t above16 = low > (16 << 20) ? (low - (16 << 20)) >> 16 : 0;
	if (above16 > 0xffff)
		above16 = 0xffff;
	r->cmos[0x15] = 640 & 0xff;
	r->cmos[0x16] = 640 >> 8;
	r->cmos[0x17] = r->cmos[0x30] = (uint8_t)ext_kb;
	r->cmos[0x18] = r->cmos[0x31] = (uint8_t)(ext_kb >> 8);
	r->cmos[0x34] = (uint8_t)above16;
	r->cmos[0x35] = (uint8_t)(above16 >> 8);
	checksum(r);
	int ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_CMOS_INDEX, 2, &rtc_ops, r, "cmos-rtc",
				   &r->region);
	if (ret) {
		pthread_mutex_destroy(&r->lock);
		free(r);
		return ret;
	}
	*out = r;
	return 0;
}

void fdvm_rtc_exit(struct fdvm_vm *vm, struct fdvm_rtc *r)
{
	if (!r)
		return;
	fdvm_io_unregister(vm, r->region);
	pthread_mutex_destroy(&r->lock);
	free(r);
}
