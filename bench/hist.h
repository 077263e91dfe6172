/*
 * hist.h -- tiny log-linear latency histogram (header-only, for the bench
 * tools).
 *
 * Values are microseconds.  Values below 2^SUB_BITS are stored exactly; above
 * that each power-of-two range [2^k, 2^(k+1)) is split into 2^SUB_BITS equal
 * sub-buckets, so the relative error of a reported percentile is at most
 * 1/2^SUB_BITS (~3 % with SUB_BITS = 5).  Recording is a couple of shifts and
 * an increment: cheap enough to do on every round trip.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>
#include <string.h>

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 40 /* 2^40 us ~ 12 days: more than enough */
#define HIST_BUCKETS ((HIST_MAX_EXP - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
} hist_t;

static inline void hist_reset(hist_t *h) { memset(h, 0, sizeof *h); }

static inline unsigned hist_index(uint64_t v) {
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB_BITS */
    if (msb >= HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    unsigned shift = msb - HIST_SUB_BITS;
    /* block (msb - SUB_BITS + 1), offset = next SUB_BITS bits below the msb */
    return (shift + 1) * HIST_SUB + (unsigned)((v >> shift) & (HIST_SUB - 1));
}

/* Lower bound of bucket i (the value reported for a percentile). */
static inline uint64_t hist_value(unsigned i) {
    if (i < HIST_SUB)
        return i;
    unsigned shift = i / HIST_SUB - 1;
    uint64_t off = i % HIST_SUB;
    return (HIST_SUB + off) << shift;
}

static inline void hist_record(hist_t *h, uint64_t v) {
    h->count[hist_index(v)]++;
    h->total++;
}

/* Smallest recorded bucket value v such that >= q of samples are <= v. */
static inline uint64_t hist_percentile(const hist_t *h, double q) {
    if (h->total == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->total + 0.999999);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want)
            return hist_value(i);
    }
    return hist_value(HIST_BUCKETS - 1);
}

#endif
