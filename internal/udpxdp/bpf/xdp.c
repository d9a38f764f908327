// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
//
// The XDP program of strait's UDP fast path. User space (internal/udpproxy)
// decides every flow; once one is answered, it puts the flow's two
// directions in `flows`, and this program forwards their datagrams: it
// rewrites the addresses and ports (fixing the checksums incrementally),
// finds the next hop with bpf_fib_lookup, and sends the frame out through
// `ports`. Anything else passes to the kernel unchanged: other traffic,
// frames not for this host's MAC, fragments, IPv4 options, IPv6
// extension headers, headers that do not add up, and a flow's datagram
// the FIB cannot route here (no neighbour entry yet, too big for the
// egress MTU, an egress interface strait did not attach to) or that
// arrives on another interface than the route back to its sender.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TTL 64 // as a datagram strait sends itself

// flow_key is a datagram's addresses as it arrives; IPv4 addresses are
// IPv4-mapped IPv6 ones.
struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u32 pad;
};

// flow is what a direction's datagrams become, and its state.
struct flow {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u32 ifindex;  // where its datagrams must arrive: the route back to their sender, found at the first
	__u64 interval; // ns of allowance per datagram; 0: no rate limit
	__u64 burst;    // ns a burst may run ahead
	__u64 tat;      // the rate limit's theoretical arrival time (GCRA)
	__u64 seen;     // the last datagram forwarded, CLOCK_MONOTONIC ns
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow);
	__uint(max_entries, 65536); // set by the loader
} flows SEC(".maps");

// ports are the interfaces frames may leave by, keyed by ifindex.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} ports SEC(".maps");

// macs are the MAC addresses of the interfaces the program is attached
// to, keyed by ifindex: a frame for another is not this host's.
struct mac {
	__u8 addr[ETH_ALEN];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mac);
	__uint(max_entries, 64);
} macs SEC(".maps");

enum {
	FORWARDED,       // datagrams forwarded here
	FORWARDED_BYTES, // their UDP payload bytes
	PASSED,          // frames not of a flow, passed to the kernel
	FALLBACK,        // datagrams of a flow passed to the kernel: not routable here, or on the wrong interface
	DROPPED,         // datagrams of a flow over its rate
	NCOUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, NCOUNTERS);
} counters SEC(".maps");

static __always_inline void count(__u32 k, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &k);
	if (c)
		*c += n;
}

static __always_inline int pass(void)
{
	count(PASSED, 1);
	return XDP_PASS;
}

static __always_inline __u16 fold(__s64 sum)
{
	__u64 s = (__u64)sum;
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

// admit takes a datagram from f's rate, or says it is over.
static __always_inline int admit(struct flow *f, __u64 now)
{
	if (!f->interval)
		return 1;
	__u64 old = f->tat;
	__u64 tat = old > now ? old : now;
	if (tat - now > f->burst)
		return 0;
	// Another CPU's datagram may win the race: both pass, a slip of
	// one datagram, rather than a lock per datagram.
	__sync_val_compare_and_swap(&f->tat, old, tat + f->interval);
	return 1;
}

// route fills in the frame's MAC addresses for its new destination and
// returns the action that sends it, or XDP_PASS (the kernel sends it, or
// answers it, as it would without this program). It always redirects
// through the devmap, even back out of the interface the frame came in
// on: a veth peer that takes XDP_TX frames with GRO alone (no XDP
// program) holds them until another frame is redirected to it.
static __always_inline int route(struct xdp_md *ctx, struct ethhdr *eth, struct bpf_fib_lookup *fib)
{
	fib->ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;
	__u32 out = fib->ifindex;
	if (!bpf_map_lookup_elem(&ports, &out))
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return bpf_redirect_map(&ports, out, 0);
}

// arrived says whether a datagram of flow f (its key k) came in where it
// should: by the interface of the route back to its sender, the reverse
// path check the kernel's rp_filter makes, found at the flow's first
// datagram. A datagram forged with the flow's addresses on another
// interface (the upstream side forging the client) passes to the kernel.
static __always_inline int arrived(struct xdp_md *ctx, struct flow *f, struct flow_key *k, int family)
{
	__u32 in = ctx->ingress_ifindex;
	if (f->ifindex)
		return f->ifindex == in;
	struct bpf_fib_lookup fib = {};
	fib.family = family;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = k->dport;
	fib.dport = k->sport;
	fib.ifindex = in;
	if (family == AF_INET) {
		__builtin_memcpy(&fib.ipv4_src, &k->dst[12], 4);
		__builtin_memcpy(&fib.ipv4_dst, &k->src[12], 4);
	} else {
		__builtin_memcpy(fib.ipv6_src, k->dst, 16);
		__builtin_memcpy(fib.ipv6_dst, k->src, 16);
	}
	// The sender's neighbour entry does not matter, only the route.
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	__sync_val_compare_and_swap(&f->ifindex, 0, fib.ifindex);
	return f->ifindex == in;
}

// lookup finds the flow of a datagram and takes it from its rate; it
// returns NULL for one this program does not forward (counted), and
// sets *act to what becomes of it.
static __always_inline struct flow *lookup(struct xdp_md *ctx, struct flow_key *k, int family, __u64 now, int *act)
{
	*act = XDP_PASS;
	struct flow *f = bpf_map_lookup_elem(&flows, k);
	if (!f) {
		count(PASSED, 1);
		return 0;
	}
	if (!arrived(ctx, f, k, family)) {
		count(FALLBACK, 1);
		return 0;
	}
	f->seen = now; // a datagram over the rate is the flow's activity too, as in user space
	if (!admit(f, now)) {
		count(DROPPED, 1);
		*act = XDP_DROP;
		return 0;
	}
	return f;
}

static __always_inline void forwarded(struct flow *f, __u64 payload)
{
	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, payload);
	count(FORWARDED, 1);
	count(FORWARDED_BYTES, payload);
}

static __always_inline int udp4(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return pass();
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return pass();
	// A header whose checksum is wrong passes: the kernel drops it.
	if (fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0)) != 0xffff)
		return pass();
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return pass();
	// Lengths that disagree (with each other, or the frame) pass to the
	// kernel, which drops the datagram: nothing malformed is forwarded
	// (but for the UDP checksum, which a router does not check either).
	__u16 len = bpf_ntohs(ip->tot_len);
	if (len < sizeof(*ip) + sizeof(*udp) || bpf_ntohs(udp->len) != len - sizeof(*ip) || (void *)ip + len > end)
		return pass();

	struct flow_key k = {};
	k.src[10] = k.src[11] = k.dst[10] = k.dst[11] = 0xff;
	__builtin_memcpy(&k.src[12], &ip->saddr, 4);
	__builtin_memcpy(&k.dst[12], &ip->daddr, 4);
	k.sport = udp->source;
	k.dport = udp->dest;
	int act;
	struct flow *f = lookup(ctx, &k, AF_INET, bpf_ktime_get_ns(), &act);
	if (!f)
		return act;

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = f->sport;
	fib.dport = f->dport;
	fib.tot_len = len;
	__builtin_memcpy(&fib.ipv4_src, &f->src[12], 4);
	__builtin_memcpy(&fib.ipv4_dst, &f->dst[12], 4);
	act = route(ctx, eth, &fib);
	if (act == XDP_PASS) {
		count(FALLBACK, 1);
		return XDP_PASS;
	}

	// As from strait's own socket: TOS 0 (a client does not set the
	// DSCP or ECN of the upstream leg), TTL 64. The checksums change by
	// what the first word, the TTL, the addresses and the ports do: the
	// IP header's covers the first four words, the UDP one's the last
	// three (its pseudo-header has the addresses).
	__be32 from[5], to[5];
	__builtin_memcpy(&from[0], ip, 4);
	from[1] = bpf_htonl((__u32)ip->ttl << 24);
	from[2] = ip->saddr;
	from[3] = ip->daddr;
	__builtin_memcpy(&from[4], &udp->source, 4);
	ip->tos = 0;
	ip->ttl = TTL;
	__builtin_memcpy(&to[0], ip, 4);
	to[1] = bpf_htonl((__u32)TTL << 24);
	__builtin_memcpy(&to[2], &f->src[12], 4);
	__builtin_memcpy(&to[3], &f->dst[12], 4);
	__builtin_memcpy(&to[4], &f->sport, 4);

	ip->saddr = to[2];
	ip->daddr = to[3];
	udp->source = f->sport;
	udp->dest = f->dport;
	ip->check = ~fold(bpf_csum_diff(from, 16, to, 16, (__u16)~ip->check));
	if (udp->check) { // 0: sent without one
		__u16 c = ~fold(bpf_csum_diff(&from[2], 12, &to[2], 12, (__u16)~udp->check));
		udp->check = c ? c : 0xffff;
	}
	forwarded(f, len - sizeof(*ip) - sizeof(*udp));
	return act;
}

static __always_inline int udp6(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct ipv6hdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return pass();
	if (ip->version != 6 || ip->nexthdr != IPPROTO_UDP) // other traffic, or extension headers
		return pass();
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return pass();
	__u16 len = bpf_ntohs(ip->payload_len);
	if (!udp->check || len < sizeof(*udp) || bpf_ntohs(udp->len) != len || (void *)(ip + 1) + len > end)
		// No checksum (not valid over IPv6), or lengths that disagree:
		// the kernel drops it.
		return pass();

	struct flow_key k = {};
	__builtin_memcpy(k.src, &ip->saddr, 16);
	__builtin_memcpy(k.dst, &ip->daddr, 16);
	k.sport = udp->source;
	k.dport = udp->dest;
	int act;
	struct flow *f = lookup(ctx, &k, AF_INET6, bpf_ktime_get_ns(), &act);
	if (!f)
		return act;

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = f->sport;
	fib.dport = f->dport;
	fib.tot_len = len + sizeof(*ip);
	__builtin_memcpy(fib.ipv6_src, f->src, 16);
	__builtin_memcpy(fib.ipv6_dst, f->dst, 16);
	act = route(ctx, eth, &fib);
	if (act == XDP_PASS) {
		count(FALLBACK, 1);
		return XDP_PASS;
	}

	// As from strait's own socket: no traffic class or flow label, hop
	// limit 64 (neither is in the UDP checksum).
	__be32 from[9], to[9];
	__builtin_memcpy(from, &ip->saddr, 32);
	__builtin_memcpy(&from[8], &udp->source, 4);
	__builtin_memcpy(to, f->src, 32);
	__builtin_memcpy(&to[8], &f->sport, 4);
	*(__be32 *)ip = bpf_htonl(0x60000000);
	__builtin_memcpy(&ip->saddr, f->src, 32);
	udp->source = f->sport;
	udp->dest = f->dport;
	ip->hop_limit = TTL;
	__u16 c = ~fold(bpf_csum_diff(from, 36, to, 36, (__u16)~udp->check));
	udp->check = c ? c : 0xffff;
	forwarded(f, len - sizeof(*udp));
	return act;
}

SEC("xdp")
int strait_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return pass();
	// Frames for another host's MAC (a switch flooding, a promiscuous
	// interface) are not this host's to forward: the kernel drops them.
	__u32 in = ctx->ingress_ifindex;
	struct mac *m = bpf_map_lookup_elem(&macs, &in);
	if (!m)
		return pass();
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++)
		if (eth->h_dest[i] != m->addr[i])
			return pass();
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return udp4(ctx, eth, end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return udp6(ctx, eth, end);
	return pass();
}

char _license[] SEC("license") = "Dual MIT/GPL";
