package main

import "encoding/binary"

// gen is the deterministic byte stream both sides of the test produce: xorshift64 seeded from a
// number, 8 little-endian bytes per step (the C++ side has the same generator).
type gen struct {
	x    uint64
	buf  [8]byte
	left int
}

func newGen(seed uint64) *gen { return &gen{x: seed*0x9E3779B97F4A7C15 + 1} }

func (g *gen) Fill(p []byte) {
	for i := range p {
		if g.left == 0 {
			g.x ^= g.x << 13
			g.x ^= g.x >> 7
			g.x ^= g.x << 17
			binary.LittleEndian.PutUint64(g.buf[:], g.x)
			g.left = 8
		}
		p[i] = g.buf[8-g.left]
		g.left--
	}
}
