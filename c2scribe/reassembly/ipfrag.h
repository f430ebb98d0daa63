/* IP defragmentation for the native engine: IPv4 and IPv6, in capture time, bounded.
 *
 * Contract: sans-IO and Python-free. The caller hands in IP packets (the bytes from the IP
 * header to the end of the captured data) with their capture time; a fragment is held until
 * its datagram is complete, then the whole datagram comes back as one contiguous IP packet:
 *
 *   IPv4: the first fragment's header (options included), total length set, MF and offset
 *         cleared, header checksum recomputed; then the reassembled payload.
 *   IPv6: the first fragment's header and unfragmentable extension headers, the Fragment
 *         header removed (the Next Header field that pointed at it now names what the
 *         Fragment header carried), Payload Length set; then the reassembled payload.
 *
 * Timers run on the capture time passed in (never the wall clock): a datagram still
 * incomplete timeout_us after its first fragment is dropped and counted. Memory is bounded by
 * max_bytes (all held fragment bytes) and max_datagrams; when either is hit the oldest
 * datagram is evicted and counted. Overlapping fragments are resolved by the policy (see
 * enum below); overlaps, and overlaps whose bytes differ, are counted.
 *
 * Nothing here allocates per packet that is not a fragment, and nothing prints.
 */
#ifndef C2SCRIBE_IPFRAG_H
#define C2SCRIBE_IPFRAG_H

#include <stddef.h>
#include <stdint.h>

/* Which bytes win where fragments overlap. "held" = bytes of fragments that arrived
 * earlier, "new" = bytes of the fragment arriving now. */
enum cs_frag_policy {
    CS_FRAG_FIRST = 0,      /* held bytes always win */
    CS_FRAG_LAST,           /* new bytes always win */
    CS_FRAG_BSD,            /* new bytes win only where the new fragment starts before the
                             * held fragment it overlaps (new offset < held offset) */
    CS_FRAG_LINUX,          /* as BSD, and new bytes also win where both start at the same
                             * offset (new offset <= held offset) */
    CS_FRAG_WINDOWS,        /* new bytes win only where the new fragment starts before the
                             * held one and ends after it (covers it completely, strictly) */
    CS_FRAG_SOLARIS,        /* new bytes win only where the new fragment starts before the
                             * held one and ends at or after its end */
    CS_FRAG__COUNT
};

extern const char *const cs_frag_policy_names[CS_FRAG__COUNT];
int cs_frag_policy_from_name(const char *name);    /* -1 when unknown */

typedef struct cs_frag_opts {
    int64_t timeout_us;           /* incomplete datagrams are dropped this long after their
                                   * first fragment (default 60 s) */
    size_t max_bytes;             /* fragment bytes held in all (default 32 MiB) */
    size_t max_datagrams;         /* datagrams being reassembled at once (default 16384) */
    unsigned max_fragments;       /* fragments per datagram (default 256) */
    int policy;                   /* enum cs_frag_policy (default CS_FRAG_FIRST) */
} cs_frag_opts;

typedef struct cs_frag_counters {
    uint64_t fragments;           /* fragments seen (IPv4 and IPv6) */
    uint64_t fragments_v6;        /* of which IPv6 */
    uint64_t reassembled;         /* datagrams completed */
    uint64_t atomic;              /* IPv6 atomic fragments (offset 0, M=0): header removed */
    uint64_t overlaps;            /* fragments that overlapped held bytes */
    uint64_t overlap_conflicts;   /* ... with different bytes in the overlap */
    uint64_t timeouts;            /* incomplete datagrams dropped on the timer */
    uint64_t evicted;             /* datagrams dropped because a limit was hit */
    uint64_t malformed;           /* fragments dropped: bad lengths, offsets past 65535, a
                                   * fragment after the last one, ... */
    uint64_t too_many_fragments;  /* datagrams dropped past max_fragments */
} cs_frag_counters;

typedef struct cs_frag_table cs_frag_table;

enum {
    CS_FRAG_PASS = 0,     /* not a fragment: use the packet as it is */
    CS_FRAG_HELD = 1,     /* a fragment, held: nothing to do yet */
    CS_FRAG_DONE = 2,     /* the datagram is complete: *out, *out_len hold it */
    CS_FRAG_DROPPED = 3,  /* a fragment that cannot be used (malformed, over a limit):
                           * counted, nothing to do */
};

void cs_frag_opts_default(cs_frag_opts *o);
cs_frag_table *cs_frag_new(const cs_frag_opts *o);    /* NULL when out of memory */
void cs_frag_free(cs_frag_table *t);

/* One IP packet: ip points at its IPv4 or IPv6 header, len = captured bytes from there
 * (may exceed the IP total length: link padding). Returns CS_FRAG_*. On CS_FRAG_DONE
 * (*out, *out_len) is the reassembled datagram, owned by the table and valid until the next
 * call of cs_frag_input, cs_frag_expire or cs_frag_free. Expires what timed out first. */
int cs_frag_input(cs_frag_table *t, int64_t now_us, const uint8_t *ip, uint32_t len,
                  const uint8_t **out, uint32_t *out_len);

/* Drop the datagrams whose timer ran out at now_us. */
void cs_frag_expire(cs_frag_table *t, int64_t now_us);

/* Bytes and datagrams held now. */
size_t cs_frag_held_bytes(const cs_frag_table *t);
size_t cs_frag_held_datagrams(const cs_frag_table *t);

const cs_frag_counters *cs_frag_stats(const cs_frag_table *t);

#endif
