/* Link-layer normalisation: find the (innermost) IPv4/IPv6 header inside a captured frame.
 *
 * Each decoder below takes the offset of its header in the frame and hands the rest to the
 * next one; every read is preceded by have(). The walk is bounded (VLAN tags, MPLS labels,
 * tunnel depth and a global layer count), so crafted frames cannot recurse deeply.
 */
#include "capture.h"

#define MAX_TAGS 8        /* VLAN tags per Ethernet header */
#define MAX_LABELS 16     /* MPLS label stack */
#define MAX_TUNNELS 4     /* GRE / VXLAN / Geneve / IP-in-IP decapsulations */
#define MAX_LAYERS 32     /* any nested header: stops MPLS->Ethernet->MPLS... loops */

enum { L3_OK = CS_L3_OK, NOT_IP = CS_L3_NOT_IP, UNSUP = CS_L3_UNSUPPORTED, TRUNC = CS_L3_TRUNCATED };

typedef struct walk {
    const uint8_t *d;
    uint64_t n;           /* caplen */
    int encap;            /* CS_ENCAP_* collected so far */
    int tunnels, layers;
} walk;

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t le16(const uint8_t *p) { return (uint32_t)p[1] << 8 | p[0]; }
static uint32_t be32(const uint8_t *p) { return be16(p) << 16 | be16(p + 2); }
static uint32_t le32(const uint8_t *p) { return le16(p + 2) << 16 | le16(p); }

/* k bytes present at off? */
static int have(const walk *w, uint64_t off, uint64_t k) { return off <= w->n && w->n - off >= k; }

static int ip(walk *w, uint64_t off, int want, cs_l3 *out);
static int ether(walk *w, uint64_t off, cs_l3 *out);
static int ethertype(walk *w, uint32_t type, uint64_t off, int tags, cs_l3 *out);

/* 802.2 LLC; only SNAP with an encapsulated-Ethernet OUI can carry IP */
static int llc(walk *w, uint64_t off, int tags, cs_l3 *out)
{
    if (!have(w, off, 3))
        return TRUNC;
    const uint8_t *p = w->d + off;
    if (p[0] != 0xAA || p[1] != 0xAA || p[2] != 0x03)
        return NOT_IP;                           /* STP, CDP via other SAPs, NetBIOS ... */
    if (!have(w, off, 8))
        return TRUNC;
    if (p[3] != 0 || p[4] != 0 || (p[5] != 0 && p[5] != 0xF8))
        return NOT_IP;                           /* vendor OUI (Cisco CDP, ...) */
    uint32_t type = be16(p + 6);
    return type < 0x600 ? NOT_IP : ethertype(w, type, off + 8, tags, out);
}

static int mpls(walk *w, uint64_t off, cs_l3 *out)
{
    int i;
    for (i = 0; i < MAX_LABELS; i++) {
        if (!have(w, off, 4))
            return TRUNC;
        off += 4;
        if (w->d[off - 2] & 1)                   /* bottom of stack */
            break;
    }
    if (i == MAX_LABELS)
        return UNSUP;
    if (!have(w, off, 1))
        return TRUNC;
    w->encap |= CS_ENCAP_MPLS;
    switch (w->d[off] >> 4) {                    /* no payload type: guess from the first nibble */
    case 4: return ip(w, off, 4, out);
    case 6: return ip(w, off, 6, out);
    case 0: return ether(w, off + 4, out);       /* pseudowire control word, then Ethernet */
    }
    return NOT_IP;
}

static int ppp_proto(walk *w, uint32_t proto, uint64_t off, cs_l3 *out)
{
    switch (proto) {
    case 0x0021: return ip(w, off, 4, out);
    case 0x0057: return ip(w, off, 6, out);
    case 0x0281: case 0x0283: return mpls(w, off, out);
    }
    return NOT_IP;                               /* LCP, IPCP, CCP, VJ-compressed TCP ... */
}

/* PPP frame whose address/control bytes (FF 03) are optional and whose protocol field may be
 * compressed to one byte (an odd first byte) */
static int ppp_frame(walk *w, uint64_t off, cs_l3 *out)
{
    if (have(w, off, 2) && w->d[off] == 0xFF && w->d[off + 1] == 0x03)
        off += 2;
    if (!have(w, off, 1))
        return TRUNC;
    if (w->d[off] & 1)
        return ppp_proto(w, w->d[off], off + 1, out);
    if (!have(w, off, 2))
        return TRUNC;
    return ppp_proto(w, be16(w->d + off), off + 2, out);
}

/* payload at off is identified by an ethertype (Ethernet, VLAN, SNAP, SLL, GRE, C-HDLC) */
static int ethertype(walk *w, uint32_t type, uint64_t off, int tags, cs_l3 *out)
{
    if (++w->layers > MAX_LAYERS)
        return UNSUP;
    if (type <= 1500)                            /* 802.3 length field: LLC follows */
        return llc(w, off, tags, out);
    switch (type) {
    case 0x0800: return ip(w, off, 4, out);
    case 0x86DD: return ip(w, off, 6, out);
    case 0x8100: case 0x88A8: case 0x9100:       /* 802.1Q / 802.1ad / old QinQ tag */
        if (tags >= MAX_TAGS)
            return UNSUP;
        if (!have(w, off, 4))
            return TRUNC;
        w->encap |= CS_ENCAP_VLAN | (tags ? CS_ENCAP_QINQ : 0);
        return ethertype(w, be16(w->d + off + 2), off + 4, tags + 1, out);
    case 0x8847: case 0x8848:
        return mpls(w, off, out);
    case 0x8864:                                 /* PPPoE session: 6-byte header, then PPP */
        if (!have(w, off, 6))
            return TRUNC;
        if (w->d[off + 1] != 0)                  /* code 0 = session data */
            return NOT_IP;
        w->encap |= CS_ENCAP_PPPOE;
        return ppp_frame(w, off + 6, out);       /* some peers compress the protocol field */
    case 0x880B:                                 /* PPP (PPTP's GRE) */
        return ppp_frame(w, off, out);
    case 0x6558:                                 /* transparent Ethernet bridging */
        return ether(w, off, out);
    case 0x894F: {                               /* NSH (RFC 8300): length in 4-byte words */
        if (!have(w, off, 4))
            return TRUNC;
        uint32_t words = w->d[off + 1] & 0x3f, next = w->d[off + 3];
        if (words < 2)
            return NOT_IP;
        off += words * 4;
        return next == 1 ? ip(w, off, 4, out) : next == 2 ? ip(w, off, 6, out)
             : next == 3 ? ether(w, off, out) : NOT_IP;
    }
    case 0x8909:                                 /* Cisco MetaData: 6 bytes, then an ethertype */
        if (!have(w, off, 8))
            return TRUNC;
        return ethertype(w, be16(w->d + off + 6), off + 8, tags, out);
    }
    return NOT_IP;
}

static int ether(walk *w, uint64_t off, cs_l3 *out)
{
    if (!have(w, off, 14))
        return TRUNC;
    uint32_t type = be16(w->d + off + 12);
    if (type > 1500 && type < 0x600)
        return NOT_IP;                           /* neither a length nor an ethertype */
    return ethertype(w, type, off + 14, 0, out);
}

static int gre(walk *w, uint64_t off, cs_l3 *out)
{
    if (!have(w, off, 4))
        return TRUNC;
    const uint8_t *p = w->d + off;
    uint32_t flags = be16(p), proto = be16(p + 2), seq = flags & 0x1000;
    uint64_t q = off + 4;
    if ((flags & 7) == 1 && proto == 0x880B && (flags & 0x2000)) {
        /* PPTP enhanced GRE (RFC 2637): key = payload length + call id, optional seq and ack */
        q += 4u + (seq ? 4u : 0) + (flags & 0x0080 ? 4u : 0);
        return ppp_frame(w, q, out);
    }
    if ((flags & 7) != 0 || (flags & 0x4000))
        return UNSUP;                            /* other versions; RFC 1701 source routing */
    q += (flags & 0x8000 ? 4u : 0) + (flags & 0x2000 ? 4u : 0) + (seq ? 4u : 0);
    if (proto == 0x88BE)                         /* ERSPAN II has seq + an 8-byte header, I neither */
        return ether(w, q + (seq ? 8 : 0), out);
    if (proto == 0x22EB) {                       /* ERSPAN III: 12 bytes (+8 if the O bit) */
        if (!have(w, q, 12))
            return TRUNC;
        uint32_t ft = (w->d[q + 10] >> 2) & 0x1f;
        uint64_t inner = q + 12 + (w->d[q + 11] & 1 ? 8 : 0);
        return ft == 0 ? ether(w, inner, out) : ft == 2 ? ip(w, inner, 0, out) : NOT_IP;
    }
    return ethertype(w, proto, q, 0, out);
}

/* IP header at off (version already checked): decapsulate a tunnel if there is one */
static int decap(walk *w, uint64_t off, int version, cs_l3 *out)
{
    const uint8_t *h = w->d + off;
    uint64_t p;
    uint32_t proto;
    if (version == 4) {
        uint32_t ihl = (h[0] & 15) * 4u;
        if (ihl < 20 || (be16(h + 6) & 0x3fff))
            return NOT_IP;                       /* fragment (MF or offset): payload incomplete */
        proto = h[9];
        p = off + ihl;
    } else {
        proto = h[6];
        p = off + 40;
        for (int i = 0; i < 8 && (proto == 0 || proto == 43 || proto == 60); i++) {
            if (!have(w, p, 2))                  /* hop-by-hop, routing, destination options */
                return TRUNC;
            proto = w->d[p];
            p += (w->d[p + 1] + 1u) * 8;
        }
    }
    switch (proto) {                             /* 44 (IPv6 fragment) is not decapsulated */
    case 4: case 41:
        w->encap |= CS_ENCAP_IPIP;
        return ip(w, p, proto == 4 ? 4 : 6, out);
    case 47:
        w->encap |= CS_ENCAP_GRE;
        return gre(w, p, out);
    case 17:                                     /* by UDP destination port */
        if (!have(w, p, 16))
            return NOT_IP;
        if (be16(w->d + p + 2) == 4789) {        /* VXLAN: 8-byte header, then Ethernet */
            w->encap |= CS_ENCAP_VXLAN;
            return ether(w, p + 16, out);
        }
        if (be16(w->d + p + 2) == 6081) {        /* Geneve: 8 bytes + options, an ethertype */
            w->encap |= CS_ENCAP_GENEVE;
            return ethertype(w, be16(w->d + p + 10), p + 16 + (w->d[p + 8] & 0x3f) * 4u, 0, out);
        }
    }
    return NOT_IP;
}

/* IP header at off; want = 4, 6 or 0 (any). Fills out, then tries to go deeper. */
static int ip(walk *w, uint64_t off, int want, cs_l3 *out)
{
    if (!have(w, off, 1))
        return TRUNC;
    int v = w->d[off] >> 4;
    if ((v != 4 && v != 6) || (want && v != want))
        return NOT_IP;
    if (!have(w, off, v == 4 ? 20 : 40))
        return TRUNC;
    out->ip = w->d + off;
    out->len = (uint32_t)(w->n - off);
    out->version = v;
    out->encap = w->encap;
    if (w->tunnels < MAX_TUNNELS) {
        cs_l3 inner;
        int saved = w->encap;
        w->tunnels++;
        if (decap(w, off, v, &inner) == L3_OK)
            *out = inner;                        /* else keep the outer header */
        w->encap = saved;
    }
    return L3_OK;
}

static int wlan(walk *w, uint64_t off, cs_l3 *out)
{
    if (!have(w, off, 2))
        return TRUNC;
    uint32_t fc0 = w->d[off], fc1 = w->d[off + 1], sub = fc0 >> 4;
    if ((fc0 & 0x0f) != 0x08 || (sub & 4))
        return NOT_IP;                           /* not a data frame (v0), or a null-data one */
    if (fc1 & 0x40)
        return UNSUP;                            /* protected: we do not decrypt */
    uint64_t base = (fc1 & 3) == 3 ? 30 : 24;    /* a fourth address when ToDS and FromDS */
    uint64_t hl = base + (sub & 8 ? (fc1 & 0x80 ? 6 : 2) : 0); /* QoS (+ HT control) fields */
    if (!have(w, off, hl))
        return TRUNC;
    if ((w->d[off + 22] & 0x0f) || ((sub & 8) && (w->d[off + base] & 0x80)))
        return UNSUP;                            /* a later fragment, or an A-MSDU */
    return llc(w, off + hl, 0, out);
}

/* 4-byte address family of NULL / LOOP captures */
static int family(walk *w, uint32_t af, cs_l3 *out)
{
    switch (af) {
    case 2: return ip(w, 4, 4, out);                              /* AF_INET everywhere */
    case 10: case 23: case 24: case 26: case 28: case 30:           /* the many AF_INET6 */
        return ip(w, 4, 6, out);
    }
    return NOT_IP;
}

/* Linux cooked capture protocol field: an ethertype, or a small "ETH_P_*" code */
static int sll_proto(walk *w, uint32_t hatype, uint32_t proto, uint64_t off, cs_l3 *out)
{
    if (hatype == 824)                           /* ARPHRD_NETLINK: protocol = netlink family */
        return NOT_IP;
    if (proto == 4)                              /* ETH_P_802_2: an LLC header follows */
        return llc(w, off, 0, out);
    return proto < 0x600 ? NOT_IP : ethertype(w, proto, off, 0, out);
}

static int nflog(walk *w, cs_l3 *out)
{
    if (!have(w, 0, 4))
        return TRUNC;
    int want = w->d[0] == 2 ? 4 : w->d[0] == 10 ? 6 : 0;
    /* TLV: length (incl. this header), type; in the capturing host's byte order, little endian
     * in practice. Types are small and never 0, so the first TLV tells a big-endian capture. */
    int be = have(w, 4, 4) && w->d[6] == 0 && w->d[7] != 0;
    uint64_t off = 4;
    while (have(w, off, 4)) {
        const uint8_t *t = w->d + off;
        uint32_t len = be ? be16(t) : le16(t), type = (be ? be16(t + 2) : le16(t + 2)) & 0x7fff;
        if (len < 4)
            return NOT_IP;
        if (type == 9)                           /* NFULA_PAYLOAD */
            return ip(w, off + 4, want, out);
        off += (len + 3u) & ~3u;
    }
    return off < w->n ? TRUNC : NOT_IP;
}

int cs_link_to_ip(int linktype, const uint8_t *data, uint32_t caplen, cs_l3 *out)
{
    walk w = { data, data ? caplen : 0, 0, 0, 0 };
    const uint8_t *d = data;
    cs_l3 l3;
    int rc;
    switch (linktype) {
    case 1:                                      /* ETHERNET */
        rc = ether(&w, 0, &l3);
        break;
    case 113:                                    /* LINUX_SLL */
        rc = !have(&w, 0, 16) ? TRUNC : sll_proto(&w, be16(d + 2), be16(d + 14), 16, &l3);
        break;
    case 276:                                    /* LINUX_SLL2 */
        rc = !have(&w, 0, 20) ? TRUNC : sll_proto(&w, be16(d + 8), be16(d), 20, &l3);
        break;
    case 0:                                      /* NULL: family in the capturing host's order */
        rc = !have(&w, 0, 4) ? TRUNC : family(&w, le32(d) > 0xffff ? be32(d) : le32(d), &l3);
        break;
    case 108:                                    /* LOOP: family in network order */
        rc = !have(&w, 0, 4) ? TRUNC : family(&w, be32(d), &l3);
        break;
    case 12: case 14: case 101:                  /* RAW (DLT_RAW on Linux / OpenBSD, LINKTYPE) */
        rc = ip(&w, 0, 0, &l3);
        break;
    case 228:
        rc = ip(&w, 0, 4, &l3);
        break;
    case 229:
        rc = ip(&w, 0, 6, &l3);
        break;
    case 9:                                      /* PPP */
        rc = ppp_frame(&w, 0, &l3);
        break;
    case 50:                                     /* PPP_HDLC; may hold Cisco HDLC frames too */
    case 104:                                    /* C_HDLC: address, control, ethertype */
        if (!have(&w, 0, 1))
            rc = TRUNC;
        else if (linktype == 50 && d[0] != 0x0F && d[0] != 0x8F)
            rc = ppp_frame(&w, 0, &l3);
        else
            rc = !have(&w, 0, 4) ? TRUNC : be16(d + 2) < 0x600 ? NOT_IP
               : ethertype(&w, be16(d + 2), 4, 0, &l3);
        break;
    case 239:                                    /* NFLOG */
        rc = nflog(&w, &l3);
        break;
    case 105:                                    /* IEEE802_11 */
        rc = wlan(&w, 0, &l3);
        break;
    case 127:                                    /* IEEE802_11_RADIOTAP: skip its header */
        if (!have(&w, 0, 4))
            rc = TRUNC;
        else
            rc = d[0] != 0 || le16(d + 2) < 8 ? NOT_IP : wlan(&w, le16(d + 2), &l3);
        break;
    default:
        return CS_L3_UNSUPPORTED;
    }
    if (rc == L3_OK)
        *out = l3;
    return rc;
}
