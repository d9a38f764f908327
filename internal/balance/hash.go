package balance

import (
	"encoding/binary"
	"hash/crc32"
	"slices"
	"strings"
)

// Ring is consistent hashing on a ring of points, made as nginx's
// "hash ... consistent" makes it, so that strait and nginx send each key
// to the same endpoint: each endpoint has 160 points per unit of weight,
// the CRC-32 of its host, a NUL and its port, continued with the last
// point's bytes; a key goes to the first point at or after its CRC-32.
// Removing one of N endpoints moves about 1/N of the keys.
type Ring struct {
	hashes []uint32 // sorted
	owner  []int    // the endpoint of each point
}

// NewRing returns a Ring over eps (at least one), whose names are
// "host:port" (or "unix:/path") as nginx's server lines write them.
func NewRing(eps []Endpoint) *Ring {
	type point struct {
		hash  uint32
		owner int
	}
	var points []point
	for i, e := range eps {
		host, port := splitHostPort(e.Name)
		base := crc32.Update(0, crc32.IEEETable, []byte(host))
		base = crc32.Update(base, crc32.IEEETable, []byte{0})
		base = crc32.Update(base, crc32.IEEETable, []byte(port))
		var prev [4]byte
		for range weight(e) * 160 {
			h := crc32.Update(base, crc32.IEEETable, prev[:])
			points = append(points, point{h, i})
			binary.LittleEndian.PutUint32(prev[:], h)
		}
	}
	slices.SortStableFunc(points, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	r := &Ring{}
	for i, p := range points {
		if i > 0 && p.hash == points[i-1].hash {
			continue // as nginx: one endpoint per hash
		}
		r.hashes = append(r.hashes, p.hash)
		r.owner = append(r.owner, p.owner)
	}
	return r
}

// splitHostPort splits name as nginx does for its points: the port is
// what follows the last colon if it is all digits.
func splitHostPort(name string) (host, port string) {
	if rest, ok := strings.CutPrefix(name, "unix:"); ok {
		return rest, ""
	}
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return name, ""
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return name, ""
		}
	}
	return name[:i], name[i+1:]
}

// Pick returns the index of the endpoint for key.
func (r *Ring) Pick(key []byte) int { return r.PickHash(RingHash(key), 0) }

// RingHash is a key's place on the ring: its CRC-32, as nginx's.
func RingHash(key []byte) uint32 { return crc32.ChecksumIEEE(key) }

// PickHash returns the endpoint of the n'th point at or after hash (n 0:
// the key's own; more, for a retry that must go elsewhere, as nginx moves
// one point at a time).
func (r *Ring) PickHash(hash uint32, n int) int {
	return r.owner[(r.point(hash)+n)%len(r.hashes)]
}

func (r *Ring) point(h uint32) int {
	i, _ := slices.BinarySearch(r.hashes, h)
	return i % len(r.hashes)
}

// Maglev is Google's Maglev consistent hashing: a lookup table of a prime
// size filled by each endpoint in turn, in proportion to its weight,
// following its own permutation. A lookup is one index; removing one of N
// endpoints moves about 1/N of the keys.
type Maglev struct {
	table []int32
}

// MaglevTableSize is the table's size: a prime, at least 100 times the
// endpoints for an even spread (Envoy's default).
const MaglevTableSize = 65537

// NewMaglev returns a Maglev over eps (at least one, fewer than
// MaglevTableSize).
func NewMaglev(eps []Endpoint) *Maglev {
	const m = MaglevTableSize
	n := len(eps)
	offset, skip, next, taken := make([]uint64, n), make([]uint64, n), make([]uint64, n), make([]int, n)
	maxW := 0
	for i, e := range eps {
		a := fnv1a(fnvOffset, []byte(e.Name))
		offset[i], skip[i] = a%m, fnv1a(a, []byte{0xff})%(m-1)+1
		maxW = max(maxW, weight(e))
	}
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	// In round k an endpoint of weight w has taken k*w/maxW slots: the
	// heaviest one a slot a round, the others in proportion.
	for k, filled := 1, 0; filled < m; k++ {
		for i, e := range eps {
			if filled == m || taken[i] >= k*weight(e)/maxW {
				continue
			}
			for {
				c := (offset[i] + next[i]*skip[i]) % m
				next[i]++
				if table[c] < 0 {
					table[c] = int32(i)
					break
				}
			}
			taken[i]++
			filled++
		}
	}
	return &Maglev{table: table}
}

// Pick returns the index of the endpoint for key.
func (g *Maglev) Pick(key []byte) int { return g.PickHash(MaglevHash(key)) }

// MaglevHash is a key's hash for Maglev: 64-bit FNV-1a.
func MaglevHash(key []byte) uint64 { return fnv1a(fnvOffset, key) }

// PickHash returns the index of the endpoint for a key's MaglevHash.
func (g *Maglev) PickHash(hash uint64) int { return int(g.table[hash%uint64(len(g.table))]) }

const fnvOffset = 14695981039346656037

// fnv1a continues a 64-bit FNV-1a hash h over b.
func fnv1a(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}
