package main

import (
	"bytes"
	"encoding/hex"
	"hash/crc32"
	"testing"
)

// Reference vectors (also produced by `yamux_peer -scenario gen -seed S`).
func TestGenVectors(t *testing.T) {
	for _, v := range []struct {
		seed uint32
		head string
		crc  uint32 // of the first 1 MiB
	}{
		{0, "2120040001060804c5a8cc9d4f995512", 0x09fa8f7c},
		{1, "7227215135ef24cc549d8e698648acfe", 0x988d8657},
		{2, "22ae5ea20f68c0840f51f8b18370e4c0", 0xfdc02c2d},
		{4294967295, "f16455519478ac442b346dbcbf72e347", 0xfc42ab08},
	} {
		buf := make([]byte, 1<<20)
		newGen(v.seed).Fill(buf)
		if h := hex.EncodeToString(buf[:16]); h != v.head {
			t.Errorf("seed %d: head %s, want %s", v.seed, h, v.head)
		}
		if c := crc32.ChecksumIEEE(buf); c != v.crc {
			t.Errorf("seed %d: crc %08x, want %08x", v.seed, c, v.crc)
		}
	}
}

// Filling in odd-sized pieces must give the same sequence as one big Fill.
func TestGenChunking(t *testing.T) {
	want := make([]byte, 100003)
	newGen(7).Fill(want)
	got := make([]byte, 0, len(want))
	g := newGen(7)
	for i := 1; len(got) < len(want); i = i%13 + 1 {
		k := i
		if len(want)-len(got) < k {
			k = len(want) - len(got)
		}
		p := make([]byte, k)
		g.Fill(p)
		got = append(got, p...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("chunked Fill differs from single Fill")
	}
}
