package main

import "encoding/binary"

// gen is the deterministic data generator shared with the C++ side.
//
//	state = seed*2654435761 + 1 (uint32 wraparound); if state == 0 { state = 1 }
//	per 4-byte block: state ^= state<<13; state ^= state>>17; state ^= state<<5
//	emit state little-endian.
//
// A stream of n bytes is the first n bytes of that sequence. Fill may be
// called with arbitrary slice sizes; the sequence continues across calls.
type gen struct {
	state uint32
	blk   [4]byte
	off   int // next unread byte in blk; 4 means blk is used up
}

func newGen(seed uint32) *gen {
	s := seed*2654435761 + 1
	if s == 0 {
		s = 1
	}
	return &gen{state: s, off: 4}
}

func (g *gen) next() uint32 {
	s := g.state
	s ^= s << 13
	s ^= s >> 17
	s ^= s << 5
	g.state = s
	return s
}

// Fill writes the next len(p) bytes of the sequence into p.
func (g *gen) Fill(p []byte) {
	i := 0
	for g.off < 4 && i < len(p) {
		p[i] = g.blk[g.off]
		g.off++
		i++
	}
	for ; i+4 <= len(p); i += 4 {
		binary.LittleEndian.PutUint32(p[i:], g.next())
	}
	if i < len(p) {
		binary.LittleEndian.PutUint32(g.blk[:], g.next())
		g.off = 0
		for i < len(p) {
			p[i] = g.blk[g.off]
			g.off++
			i++
		}
	}
}
