// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
//
// The XDP program of strait's UDP fast path. User space (internal/udpproxy)
// decides every flow; once one is answered, it puts the flow's two
// directions in `flows`, and this program forwards their datagrams: it
// rewrites the addresses and ports (fixing the checksums incrementally),
// finds the next hop with bpf_fib_lookup, and sends the frame out through
// `ports`. Anything else passes to the kernel unchanged: other traffic,
// fragments, IPv4 options, IPv6 extension headers, and a flow's datagram
// the FIB cannot route here (no neighbour entry yet, too big for the
// egress MTU, an egress interface strait did not attach to).

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
	__u32 ifindex;  // where its datagrams arrive: learnt from the first, then required
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

enum {
	FORWARDED,       // datagrams forwarded here
	FORWARDED_BYTES, // their IP bytes
	PASSED,          // frames not of a flow, passed to the kernel
	FALLBACK,        // datagrams of a flow passed to the kernel: unroutable here
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
// answers it, as it would without this program).
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
	if (out == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect_map(&ports, out, 0);
}

// lookup finds the flow of a datagram, and takes it from its rate; it
// returns NULL for one this program does not forward (counted).
//
// A flow's datagrams must keep arriving on one interface: a datagram
// forged with the flow's addresses on another (a client forging its
// endpoint's) passes to the kernel, whose reverse path filter and
// sockets judge it as they would without this program.
static __always_inline struct flow *lookup(struct xdp_md *ctx, struct flow_key *k, __u64 now, int *drop)
{
	struct flow *f = bpf_map_lookup_elem(&flows, k);
	if (!f) {
		count(PASSED, 1);
		return 0;
	}
	__u32 in = ctx->ingress_ifindex;
	if (f->ifindex != in && (f->ifindex || __sync_val_compare_and_swap(&f->ifindex, 0, in) != 0)) {
		count(FALLBACK, 1);
		return 0;
	}
	if (!admit(f, now)) {
		count(DROPPED, 1);
		*drop = 1;
		return 0;
	}
	return f;
}

static __always_inline void forwarded(struct flow *f, __u64 now, __u64 len)
{
	f->seen = now;
	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, len);
	count(FORWARDED, 1);
	count(FORWARDED_BYTES, len);
}

static __always_inline int udp4(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return XDP_PASS;
	if (ip->protocol != IPPROTO_UDP || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))) {
		count(PASSED, 1);
		return XDP_PASS;
	}
	// A header whose checksum is wrong passes: the kernel drops it.
	if (fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0)) != 0xffff) {
		count(PASSED, 1);
		return XDP_PASS;
	}
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	// Lengths that disagree (with each other, or the frame) pass to the
	// kernel, which drops the datagram: nothing malformed is forwarded.
	__u16 len = bpf_ntohs(ip->tot_len);
	if (bpf_ntohs(udp->len) != len - sizeof(*ip) || (void *)ip + len > end) {
		count(PASSED, 1);
		return XDP_PASS;
	}

	struct flow_key k = {};
	k.src[10] = k.src[11] = k.dst[10] = k.dst[11] = 0xff;
	__builtin_memcpy(&k.src[12], &ip->saddr, 4);
	__builtin_memcpy(&k.dst[12], &ip->daddr, 4);
	k.sport = udp->source;
	k.dport = udp->dest;
	__u64 now = bpf_ktime_get_ns();
	int drop = 0;
	struct flow *f = lookup(ctx, &k, now, &drop);
	if (!f)
		return drop ? XDP_DROP : XDP_PASS;

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = f->sport;
	fib.dport = f->dport;
	fib.tot_len = len;
	__builtin_memcpy(&fib.ipv4_src, &f->src[12], 4);
	__builtin_memcpy(&fib.ipv4_dst, &f->dst[12], 4);
	int act = route(ctx, eth, &fib);
	if (act == XDP_PASS) {
		count(FALLBACK, 1);
		return XDP_PASS;
	}

	// The checksums change by what the TTL, addresses and ports do: the
	// IP header's covers the first three words, the UDP one's the last
	// three (its pseudo-header has the addresses).
	__be32 from[4], to[4];
	from[0] = bpf_htonl((__u32)ip->ttl << 24);
	from[1] = ip->saddr;
	from[2] = ip->daddr;
	__builtin_memcpy(&from[3], &udp->source, 4);
	to[0] = bpf_htonl((__u32)TTL << 24);
	__builtin_memcpy(&to[1], &f->src[12], 4);
	__builtin_memcpy(&to[2], &f->dst[12], 4);
	__builtin_memcpy(&to[3], &f->sport, 4);

	ip->ttl = TTL;
	ip->saddr = to[1];
	ip->daddr = to[2];
	udp->source = f->sport;
	udp->dest = f->dport;
	ip->check = ~fold(bpf_csum_diff(from, 12, to, 12, (__u16)~ip->check));
	if (udp->check) { // 0: sent without one
		__u16 c = ~fold(bpf_csum_diff(&from[1], 12, &to[1], 12, (__u16)~udp->check));
		udp->check = c ? c : 0xffff;
	}
	forwarded(f, now, fib.tot_len);
	return act;
}

static __always_inline int udp6(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct ipv6hdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return XDP_PASS;
	if (ip->nexthdr != IPPROTO_UDP) { // other traffic, or extension headers
		count(PASSED, 1);
		return XDP_PASS;
	}
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	__u16 len = bpf_ntohs(ip->payload_len);
	if (!udp->check || bpf_ntohs(udp->len) != len || (void *)(ip + 1) + len > end) {
		// No checksum (not valid over IPv6), or lengths that disagree:
		// the kernel drops it.
		count(PASSED, 1);
		return XDP_PASS;
	}

	struct flow_key k = {};
	__builtin_memcpy(k.src, &ip->saddr, 16);
	__builtin_memcpy(k.dst, &ip->daddr, 16);
	k.sport = udp->source;
	k.dport = udp->dest;
	__u64 now = bpf_ktime_get_ns();
	int drop = 0;
	struct flow *f = lookup(ctx, &k, now, &drop);
	if (!f)
		return drop ? XDP_DROP : XDP_PASS;

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = f->sport;
	fib.dport = f->dport;
	fib.tot_len = len + sizeof(*ip);
	__builtin_memcpy(fib.ipv6_src, f->src, 16);
	__builtin_memcpy(fib.ipv6_dst, f->dst, 16);
	int act = route(ctx, eth, &fib);
	if (act == XDP_PASS) {
		count(FALLBACK, 1);
		return XDP_PASS;
	}

	__be32 from[9], to[9];
	__builtin_memcpy(from, &ip->saddr, 32);
	__builtin_memcpy(&from[8], &udp->source, 4);
	__builtin_memcpy(to, f->src, 32);
	__builtin_memcpy(&to[8], &f->sport, 4);
	__builtin_memcpy(&ip->saddr, f->src, 32);
	udp->source = f->sport;
	udp->dest = f->dport;
	ip->hop_limit = TTL;
	__u16 c = ~fold(bpf_csum_diff(from, 36, to, 36, (__u16)~udp->check));
	udp->check = c ? c : 0xffff;
	forwarded(f, now, fib.tot_len);
	return act;
}

SEC("xdp")
int strait_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return udp4(ctx, eth, end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return udp6(ctx, eth, end);
	count(PASSED, 1);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
