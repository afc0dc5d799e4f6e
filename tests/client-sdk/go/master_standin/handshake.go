package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// The handshake is decoded and encoded by the `capnp` tool (there is no Go Cap'n Proto library
// here). Only the standard unpacked stream framing is handled in Go, because exactly one message
// must be read: the yamux session starts on the very next byte.

// readFrame reads exactly one Cap'n Proto message (segment table + segments) from r, never a byte
// more, and returns all of its bytes ready for `capnp decode`. maxBytes bounds the message.
func readFrame(r io.Reader, maxBytes int) ([]byte, error) {
	var first [4]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return nil, fmt.Errorf("reading the segment count: %w", err)
	}
	count := uint64(binary.LittleEndian.Uint32(first[:])) + 1
	if count > 512 {
		return nil, fmt.Errorf("the message has %d segments", count)
	}
	// 4 bytes of count, 4 per segment size, padded to a whole word.
	tableLen := int(4 + 4*count)
	if tableLen%8 != 0 {
		tableLen += 4
	}
	table := make([]byte, tableLen)
	copy(table, first[:])
	if _, err := io.ReadFull(r, table[4:]); err != nil {
		return nil, fmt.Errorf("reading the segment table: %w", err)
	}
	var words uint64
	for i := uint64(0); i < count; i++ {
		words += uint64(binary.LittleEndian.Uint32(table[4+4*i:]))
	}
	total := uint64(tableLen) + 8*words
	if total > uint64(maxBytes) {
		return nil, fmt.Errorf("the message is %d bytes, more than %d", total, maxBytes)
	}
	msg := make([]byte, total)
	copy(msg, table)
	if _, err := io.ReadFull(r, msg[tableLen:]); err != nil {
		return nil, fmt.Errorf("reading %d words of segments: %w", words, err)
	}
	return msg, nil
}

// capnpTool runs `capnp <verb> [--short] schema type` with stdin and returns stdout.
func capnpTool(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("capnp", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("capnp %s: %v: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes(), nil
}

// decodeRequest turns a framed HandshakeRequest into the tool's one-line text form.
func decodeRequest(schema string, msg []byte) (string, error) {
	text, err := capnpTool(msg, "decode", "--short", schema, "HandshakeRequest")
	return strings.TrimSpace(string(text)), err
}

// encodeResponse turns the text form of a HandshakeResponse into one framed message.
func encodeResponse(schema, text string) ([]byte, error) {
	return capnpTool([]byte(text), "encode", schema, "HandshakeResponse")
}

// quote renders s as a Cap'n Proto text literal (control characters as octal escapes).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
