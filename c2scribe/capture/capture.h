/* Capture reading owned by c2scribe: a streaming pcap/pcapng parser (bytes in, packets out)
 * and link-layer normalisation down to the IP header.
 *
 * Contract: sans-IO. The caller pushes file bytes in chunks of any size; the parser calls back
 * once per packet record with a pointer valid only during the callback. Nothing here opens a
 * file, allocates per packet, or knows about libnids.
 */
#ifndef C2SCRIBE_CAPTURE_H
#define C2SCRIBE_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

/* ---- packet records ------------------------------------------------------------------- */

typedef struct cs_packet {
    int64_t ts_sec;          /* capture time, seconds since the epoch */
    uint32_t ts_usec;        /* microseconds (nanosecond files are truncated) */
    uint32_t caplen;         /* bytes present at data */
    uint32_t origlen;        /* bytes on the wire */
    int linktype;            /* LINKTYPE_* of this packet (pcapng: of its interface) */
    const uint8_t *data;
    uint64_t offset;         /* file offset of the record (pcap: record header; pcapng: block) */
} cs_packet;

/* Return 0 to continue, non-zero to stop feeding (cs_reader_feed then returns CS_STOPPED). */
typedef int (*cs_packet_cb)(void *ctx, const cs_packet *pkt);

enum {
    CS_OK = 0,
    CS_ERROR = -1,           /* malformed input: see reader->error, reader->error_offset */
    CS_STOPPED = -2,         /* the callback asked to stop */
};

enum { CS_FMT_UNKNOWN = 0, CS_FMT_PCAP = 1, CS_FMT_PCAPNG = 2 };

#define CS_MAX_INTERFACES 256

typedef struct cs_reader {
    int format;                       /* CS_FMT_* once the magic was seen */
    int swapped;                      /* file byte order differs from host */
    int nsec;                         /* pcap: nanosecond timestamps */
    int linktype;                     /* pcap: the file's link type (pcapng: interface 0's) */
    uint32_t snaplen;
    int big_endian;                   /* byte order of the file (pcapng: of the section) */
    /* pcapng interfaces of the current section */
    int n_ifaces;
    int iface_linktype[CS_MAX_INTERFACES];
    uint32_t iface_snaplen[CS_MAX_INTERFACES]; /* 0 = unlimited */
    uint64_t iface_tsdiv[CS_MAX_INTERFACES];   /* ticks per second (if_tsresol) */
    int64_t iface_tsoffset[CS_MAX_INTERFACES]; /* if_tsoffset, seconds */
    /* buffering of a record cut across feed() calls */
    uint8_t *buf;
    size_t buf_len, buf_cap;
    uint64_t consumed;                /* file offset of buf[0] */
    uint64_t packets;                 /* packet records delivered */
    char error[256];
    uint64_t error_offset;
} cs_reader;

void cs_reader_init(cs_reader *r);
void cs_reader_free(cs_reader *r);
/* Feed the next bytes of the file. Returns CS_OK, CS_ERROR or CS_STOPPED. After CS_ERROR the
 * reader stays in error (later feeds return CS_ERROR). After CS_STOPPED the rest of the chunk was
 * not looked at: to resume, feed again from file offset consumed + buf_len. */
int cs_reader_feed(cs_reader *r, const uint8_t *data, size_t len, cs_packet_cb cb, void *ctx);
/* End of file. Returns CS_ERROR if the file is empty, not a capture, or ends inside a record
 * ("truncated": error_offset = offset of the partial record). */
int cs_reader_finish(cs_reader *r);

/* ---- link-layer normalisation --------------------------------------------------------- */

enum {
    CS_L3_OK = 0,
    CS_L3_NOT_IP = 1,        /* ARP, LLDP, 802.11 management ... (not an error) */
    CS_L3_UNSUPPORTED = 2,   /* link type or encapsulation we do not decode */
    CS_L3_TRUNCATED = 3,     /* caplen too short for the headers */
};

typedef struct cs_l3 {
    const uint8_t *ip;       /* first byte of the IPv4/IPv6 header */
    uint32_t len;            /* bytes available from ip to the end of the captured data */
    int version;             /* 4 or 6 */
    int encap;               /* bit set of CS_ENCAP_* seen on the way */
} cs_l3;

enum {
    CS_ENCAP_VLAN = 1 << 0, CS_ENCAP_QINQ = 1 << 1, CS_ENCAP_MPLS = 1 << 2,
    CS_ENCAP_PPPOE = 1 << 3, CS_ENCAP_GRE = 1 << 4, CS_ENCAP_VXLAN = 1 << 5,
    CS_ENCAP_IPIP = 1 << 6, CS_ENCAP_GENEVE = 1 << 7,
};

/* Find the IP header inside a link-layer frame. Returns CS_L3_*; on CS_L3_OK fills out. */
int cs_link_to_ip(int linktype, const uint8_t *data, uint32_t caplen, cs_l3 *out);

#endif
