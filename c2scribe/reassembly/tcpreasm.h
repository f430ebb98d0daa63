/* TCP stream reassembly for the native engine: one connection, both directions.
 *
 * Contract: sans-IO and Python-free. The caller hands in every TCP segment of a connection
 * (already matched to it, with its direction) and gets the bytes of each direction back in
 * order through the sink callbacks, with the capture time and frame of the segment that
 * carried them. What the capture does not hold comes out as a gap event of so many bytes,
 * and the stream goes on after it.
 *
 * Model (Suricata's IDS mode): bytes are handed over once the receiver acknowledged them,
 * so that every copy of overlapping bytes still in flight is judged by the overlap policy,
 * as the receiving host would have. A direction whose receiver is never seen acknowledging
 * anything (a one-sided capture) is handed over as soon as it is in order.
 *
 * A hole (bytes missing before bytes that are held) is skipped, as a gap, when
 *   - the receiver acknowledged past its start (it got what the capture lost), after a
 *     grace of ack_grace_us for captures whose two directions are slightly out of order;
 *   - it has waited hole_timeout_us of capture time with bytes held behind it;
 *   - the connection holds more than max_conn_bytes, or all connections more than
 *     max_total_bytes (the oldest held bytes go first);
 *   - the connection ends (FIN, RST, timeout, eviction, end of input: cs_tcp_flush).
 * Bytes acknowledged but never seen, with nothing behind them, are a gap too: the receiver
 * confirms they existed.
 *
 * Sequence numbers wrap: stream offsets are 64-bit, mapped from 32-bit sequence numbers
 * relative to the next byte expected. Segments more than max_window bytes away from it are
 * counted and ignored (a stray or forged segment must not move the stream).
 */
#ifndef C2SCRIBE_TCPREASM_H
#define C2SCRIBE_TCPREASM_H

#include <stddef.h>
#include <stdint.h>

/* Overlap policies, by the names Suricata's host-os-policy uses. For every byte held (not
 * yet handed over) that a new segment also carries, the policy compares the new segment
 * with the segment the held byte came from and says which copy the receiver keeps. */
enum cs_tcp_policy {
    CS_TCP_FIRST = 0,     /* the held copy, always (libnids' only behaviour) */
    CS_TCP_LAST,          /* the new copy, always */
    CS_TCP_BSD,           /* new wins where it starts before the held segment */
    CS_TCP_LINUX,         /* BSD, and new wins where both start together and new is longer */
    CS_TCP_OLD_LINUX,     /* LINUX, and new wins where both start together and end together */
    CS_TCP_SOLARIS,       /* new wins where it ends after the held segment (or at its end,
                           * starting before it or with it) */
    CS_TCP_HPUX11,        /* as SOLARIS */
    CS_TCP_HPUX10,        /* as BSD */
    CS_TCP_IRIX,          /* as BSD */
    CS_TCP_MACOS,         /* as BSD */
    CS_TCP_WINDOWS,       /* as BSD */
    CS_TCP_WINDOWS2K3,    /* as BSD */
    CS_TCP_VISTA,         /* as FIRST */
    CS_TCP_BSD_RIGHT,     /* as FIRST */
    CS_TCP_OLD_SOLARIS,   /* as FIRST */
    CS_TCP__COUNT
};
extern const char *const cs_tcp_policy_names[CS_TCP__COUNT];
int cs_tcp_policy_from_name(const char *name);     /* -1 when unknown */

typedef struct cs_tcp_pos {       /* where a segment was in the capture chain */
    int file;
    uint64_t frame;
} cs_tcp_pos;

/* What comes out. dir is the index given with the segments (0 or 1). ts_us/pos: the
 * segment the bytes came from (for a gap: the first bytes after it, or the segment that
 * made it known). */
typedef struct cs_tcp_sink {
    void (*data)(void *ctx, int dir, const uint8_t *p, size_t n, int64_t ts_us,
                 const cs_tcp_pos *pos);
    void (*gap)(void *ctx, int dir, uint64_t n, int64_t ts_us, const cs_tcp_pos *pos);
    /* held and fresh: the two copies of n overlapping bytes at stream offset off (n is at
     * most CS_TCP_CONFLICT_KEEP: longer overlaps are cut), which one the policy kept. */
    void (*conflict)(void *ctx, int dir, uint64_t off, uint64_t len, const uint8_t *held,
                     const uint8_t *fresh, size_t n, int fresh_kept);
} cs_tcp_sink;

#define CS_TCP_CONFLICT_KEEP 256

typedef struct cs_tcp_counters {
    uint64_t gaps, gap_bytes;             /* holes skipped */
    uint64_t overlaps, overlap_bytes;     /* segments overlapping held bytes */
    uint64_t conflicts, conflict_bytes;   /* ... with different bytes */
    uint64_t retransmitted_bytes;         /* bytes before the stream's next byte (already handed over) */
    uint64_t out_of_window;               /* segments and acks too far from the stream */
    uint64_t conn_cap_hits;               /* a connection held more than max_conn_bytes */
    uint64_t total_cap_hits;              /* all connections held more than max_total_bytes */
    uint64_t unacked_flushes;             /* bytes handed over unacknowledged after unacked_timeout_us */
} cs_tcp_counters;

typedef struct cs_tcp_half cs_tcp_half;
typedef struct cs_tcp_conn cs_tcp_conn;

typedef struct cs_tcp_cfg {
    int policy;                   /* enum cs_tcp_policy: new connections' (cs_tcp_set_policy) */
    size_t max_conn_bytes;        /* held per connection, both directions (default 8 MiB) */
    size_t max_total_bytes;       /* held by all connections (default 512 MiB) */
    int64_t hole_timeout_us;      /* default 5 s */
    int64_t ack_grace_us;         /* default 20 ms */
    int64_t unacked_timeout_us;   /* in-order bytes never acknowledged (lost ACKs): default 10 s */
    uint32_t max_window;          /* default 64 MiB */
    cs_tcp_sink sink;
    /* state shared by the connections of one engine */
    size_t total_bytes;           /* held now */
    cs_tcp_conn *oldest, *newest; /* connections holding bytes, least recently given some */
    cs_tcp_counters c;
} cs_tcp_cfg;

void cs_tcp_cfg_default(cs_tcp_cfg *cfg);

/* One TCP segment of a connection. */
typedef struct cs_tcp_seg {
    uint32_t seq, ack;
    uint8_t flags;                /* TCP flags byte */
    const uint8_t *payload;
    uint32_t len;
    int64_t ts_us;
    cs_tcp_pos pos;
} cs_tcp_seg;

#define CS_TH_FIN 0x01
#define CS_TH_SYN 0x02
#define CS_TH_RST 0x04
#define CS_TH_ACK 0x10

/* Per-direction facts for the connection record. */
typedef struct cs_tcp_dirinfo {
    uint64_t delivered;           /* bytes handed over */
    uint64_t gaps, gap_bytes;
    uint64_t conflicts;
    int syn;                      /* its first sequence number came from a SYN */
    int fin;                      /* its FIN was reached: the direction is complete */
} cs_tcp_dirinfo;

cs_tcp_conn *cs_tcp_conn_new(cs_tcp_cfg *cfg, void *ctx);   /* ctx: passed to the sink */
/* Hand over what is held and free the connection (every hole becomes a gap). */
void cs_tcp_conn_free(cs_tcp_cfg *cfg, cs_tcp_conn *c);
/* Free the connection, discarding what it holds (an engine torn down without finishing). */
void cs_tcp_conn_drop(cs_tcp_cfg *cfg, cs_tcp_conn *c);

/* One segment sent in direction dir. Its ACK applies to the other direction. */
void cs_tcp_segment(cs_tcp_cfg *cfg, cs_tcp_conn *c, int dir, const cs_tcp_seg *s);
/* Hand over everything held in both directions now, holes as gaps (RST, end). */
void cs_tcp_flush(cs_tcp_cfg *cfg, cs_tcp_conn *c);
/* Both directions reached their FIN and everything was handed over. */
int cs_tcp_done(const cs_tcp_conn *c);
/* The two directions trade places (the caller learnt it had them the wrong way round);
 * only before anything was handed over. */
void cs_tcp_swap(cs_tcp_conn *c);
void cs_tcp_info(const cs_tcp_conn *c, int dir, cs_tcp_dirinfo *out);
size_t cs_tcp_held(const cs_tcp_conn *c);
/* The overlap policy of the host receiving direction dir (default: cfg->policy). */
void cs_tcp_set_policy(cs_tcp_conn *c, int dir, int policy);

#endif
