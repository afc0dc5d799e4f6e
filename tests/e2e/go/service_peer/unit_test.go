package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
)

const testSchema = "/work/main/protocol/socketmaster.capnp"

// frameOf builds a framed message with the given segment sizes (in words); segment i is filled
// with byte i+1 so the test can tell where the message ends.
func frameOf(sizes ...uint32) []byte {
	var b bytes.Buffer
	hdr := make([]byte, 4+4*len(sizes))
	binary.LittleEndian.PutUint32(hdr, uint32(len(sizes)-1))
	for i, s := range sizes {
		binary.LittleEndian.PutUint32(hdr[4+4*i:], s)
	}
	b.Write(hdr)
	if len(hdr)%8 != 0 {
		b.Write(make([]byte, 4))
	}
	for i, s := range sizes {
		b.Write(bytes.Repeat([]byte{byte(i + 1)}, int(s)*8))
	}
	return b.Bytes()
}

// oneByteReader returns at most one byte per Read, like a slow socket.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func TestReadFrameExactLength(t *testing.T) {
	for _, sizes := range [][]uint32{{0}, {1}, {3}, {1, 2}, {2, 0, 5}, {1, 1, 1, 1}} {
		msg := frameOf(sizes...)
		trailer := []byte("YAMUX-STARTS-HERE")
		r := bytes.NewReader(append(append([]byte(nil), msg...), trailer...))
		got, err := readFrame(oneByteReader{r}, 1<<20)
		if err != nil {
			t.Fatalf("sizes %v: %v", sizes, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("sizes %v: got %d bytes, want %d", sizes, len(got), len(msg))
		}
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(rest, trailer) {
			t.Fatalf("sizes %v: reader over-read; rest %q", sizes, rest)
		}
	}
}

func TestReadFrameErrors(t *testing.T) {
	// Truncated at every possible position.
	msg := frameOf(2, 1)
	for i := 0; i < len(msg); i++ {
		if _, err := readFrame(bytes.NewReader(msg[:i]), 1<<20); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	// Too many segments.
	big := make([]byte, 4)
	binary.LittleEndian.PutUint32(big, 600)
	if _, err := readFrame(bytes.NewReader(big), 1<<20); err == nil || !strings.Contains(err.Error(), "segments") {
		t.Fatalf("600 segments: %v", err)
	}
	// Over the byte limit (segment sizes claim 1 GiB).
	huge := frameOf(0)
	binary.LittleEndian.PutUint32(huge[4:], 1<<27)
	if _, err := readFrame(bytes.NewReader(huge), 1<<20); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("huge: %v", err)
	}
}

func TestReadFrameOfCapnpEncode(t *testing.T) {
	text := `(accepted = (registrationId = 18446744073709551615, boundAddress = "[::]:8000"))`
	enc, err := runCapnp("capnp", []byte(text+"\n"), "encode", testSchema, "HandshakeResponse")
	if err != nil {
		t.Skipf("capnp not usable: %v", err)
	}
	got, err := readFrame(bytes.NewReader(append(enc, 0xAA, 0xBB)), maxResponseBytes)
	if err != nil || !bytes.Equal(got, enc) {
		t.Fatalf("readFrame: %v (%d vs %d bytes)", err, len(got), len(enc))
	}
	dec, err := decodeText("capnp", testSchema, "HandshakeResponse", got)
	if err != nil {
		t.Fatal(err)
	}
	res, err := interpretResponse(dec)
	if err != nil || !res.Accepted || res.RegistrationID != "18446744073709551615" || res.BoundAddress != "[::]:8000" {
		t.Fatalf("%q -> %+v, %v", dec, res, err)
	}
}

func TestInterpretResponse(t *testing.T) {
	cases := []struct {
		text string
		want handshakeResult
		bad  bool
	}{
		{text: `(accepted = (registrationId = 1, boundAddress = "[::]:8000"))`,
			want: handshakeResult{Accepted: true, RegistrationID: "1", BoundAddress: "[::]:8000"}},
		{text: `(accepted = (registrationId = 0))`,
			want: handshakeResult{Accepted: true, RegistrationID: "0"}},
		{text: `(rejected = (code = conflict, message = "port \"8000\" is taken\\now\nx\001"))`,
			want: handshakeResult{Code: "conflict", Message: "port \"8000\" is taken\\now\nx\x01"}},
		{text: `(rejected = (code = badRequest))`, want: handshakeResult{Code: "badRequest"}},
		{text: `(rejected = (code = 9, message = "future"))`, want: handshakeResult{Code: "9", Message: "future"}},
		{text: `()`, bad: true},
		{text: `(accepted = (registrationId = 1`, bad: true},
		{text: `garbage`, bad: true},
	}
	for _, c := range cases {
		got, err := interpretResponse(c.text)
		if c.bad {
			if err == nil {
				t.Errorf("%s: no error, got %+v", c.text, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.text, got, err, c.want)
		}
	}
}

// TestRequestRoundTrip checks that capnpQuote survives capnp encode + decode for awkward strings
// (PEM newlines, quotes, backslashes, control bytes, UTF-8).
func TestRequestRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("capnp"); err != nil {
		t.Skip("capnp not installed")
	}
	pem := "-----BEGIN CERTIFICATE-----\nMIIB\"\\x01\t\r\n-----END CERTIFICATE-----\n"
	opts := requestOptions{
		Version: 1, Token: "tok\"en\\\x01\x7f é", Address: "127.0.0.1", Port: 65535, HTTP: true,
		DomainSuffix: ".example.com", PathPrefix: "/a b", TLS: true, CertChainPem: pem,
		PrivateKeyPem: "key\n", ProxyProtocol: true,
	}
	enc, err := encodeRequest("capnp", testSchema, requestText(opts))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := decodeText("capnp", testSchema, "HandshakeRequest", enc)
	if err != nil {
		t.Fatal(err)
	}
	v, err := parseCapnpText(dec)
	if err != nil {
		t.Fatalf("%q: %v", dec, err)
	}
	top := v.(map[string]interface{})
	sock := top["socket"].(map[string]interface{})
	httpRoute := sock["http"].(map[string]interface{})
	tls := sock["tls"].(map[string]interface{})
	checks := map[string]interface{}{
		"version":       top["version"],
		"token":         top["token"],
		"address":       sock["address"],
		"port":          sock["port"],
		"proxyProtocol": sock["proxyProtocol"],
		"domainSuffix":  httpRoute["domainSuffix"],
		"pathPrefix":    httpRoute["pathPrefix"],
		"cert":          tls["certificateChainPem"],
		"key":           tls["privateKeyPem"],
	}
	want := map[string]interface{}{
		"version": capnpNumber("1"), "token": opts.Token, "address": "127.0.0.1",
		"port": capnpNumber("65535"), "proxyProtocol": capnpIdent("true"),
		"domainSuffix": ".example.com", "pathPrefix": "/a b", "cert": pem, "key": "key\n",
	}
	for k, w := range want {
		if checks[k] != w {
			t.Errorf("%s: got %#v, want %#v (decoded %s)", k, checks[k], w, dec)
		}
	}

	// -tcp leaves http unset.
	opts = requestOptions{Version: 1, Port: 9000}
	enc, err = encodeRequest("capnp", testSchema, requestText(opts))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ = decodeText("capnp", testSchema, "HandshakeRequest", enc)
	if want := `(version = 1, token = "", socket = (port = 9000, proxyProtocol = false))`; dec != want {
		t.Errorf("tcp request decodes to %s, want %s", dec, want)
	}
}

func TestEncodeRequestRejectsBadText(t *testing.T) {
	if _, err := exec.LookPath("capnp"); err != nil {
		t.Skip("capnp not installed")
	}
	if _, err := encodeRequest("capnp", testSchema, "(version = 1, bogus = 2)"); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := encodeRequest("capnp", testSchema, "(version = 1) (version = 2)"); err == nil {
		t.Fatal("two messages accepted")
	}
}

// proxyV2 builds a PROXY v2 header (PROXY command, STREAM) for src -> dst, plus extra TLV bytes.
func proxyV2(src, dst *net.TCPAddr, tlv []byte) []byte {
	var b bytes.Buffer
	b.Write(proxyV2Signature)
	b.WriteByte(0x21)
	var block []byte
	if ip4 := src.IP.To4(); ip4 != nil {
		b.WriteByte(0x11)
		block = append(append(block, ip4...), dst.IP.To4()...)
	} else {
		b.WriteByte(0x21)
		block = append(append(block, src.IP.To16()...), dst.IP.To16()...)
	}
	block = append(block, byte(src.Port>>8), byte(src.Port), byte(dst.Port>>8), byte(dst.Port))
	block = append(block, tlv...)
	b.WriteByte(byte(len(block) >> 8))
	b.WriteByte(byte(len(block)))
	b.Write(block)
	return b.Bytes()
}

func TestReadProxyHeader(t *testing.T) {
	src4 := &net.TCPAddr{IP: net.ParseIP("203.0.113.5"), Port: 4242}
	dst4 := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 443}
	src6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 65535}
	dst6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 80}
	for _, c := range []struct {
		hdr      []byte
		src, dst string
	}{
		{proxyV2(src4, dst4, nil), "203.0.113.5:4242", "192.0.2.1:443"},
		{proxyV2(src4, dst4, []byte{0x04, 0x00, 0x01, 0xAA}), "203.0.113.5:4242", "192.0.2.1:443"},
		{proxyV2(src6, dst6, nil), "[2001:db8::7]:65535", "[2001:db8::1]:80"},
	} {
		payload := []byte("GET / HTTP/1.1\r\n")
		r := bytes.NewReader(append(append([]byte(nil), c.hdr...), payload...))
		h, err := readProxyHeader(oneByteReader{r})
		if err != nil {
			t.Fatal(err)
		}
		if h.Src.String() != c.src || h.Dst.String() != c.dst || h.Len != len(c.hdr) || h.Command != 1 {
			t.Fatalf("got %+v (src %v dst %v), want %s -> %s", h, h.Src, h.Dst, c.src, c.dst)
		}
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(rest, payload) {
			t.Fatalf("over-read: rest %q", rest)
		}
	}

	// LOCAL command: no address, header still consumed.
	local := append(append([]byte(nil), proxyV2Signature...), 0x20, 0x00, 0x00, 0x00)
	h, err := readProxyHeader(bytes.NewReader(local))
	if err != nil || h.Src != nil || h.Command != 0 || h.Len != 16 {
		t.Fatalf("LOCAL: %+v %v", h, err)
	}

	bad := [][]byte{
		[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),                                         // v1
		append(append([]byte(nil), proxyV2Signature...), 0x11, 0x11, 0x00, 0x0c),             // version 1
		append(append([]byte(nil), proxyV2Signature...), 0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4), // INET too short
		append(append([]byte(nil), proxyV2Signature...), 0x21, 0x11, 0x00, 0x0c, 1, 2),       // truncated
		append(append([]byte(nil), proxyV2Signature...), 0x21, 0x11, 0xff, 0xff),             // too long
	}
	for i, b := range bad {
		if _, err := readProxyHeader(bytes.NewReader(b)); err == nil {
			t.Errorf("bad header %d accepted", i)
		}
	}
}

func TestWebSocketAccept(t *testing.T) {
	// The example from RFC 6455 section 1.3.
	if got := wsAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("got %s", got)
	}
}

// maskedFrame builds a client frame.
func maskedFrame(fin bool, opcode byte, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		var l [8]byte
		binary.BigEndian.PutUint64(l[:], uint64(n))
		out = append(append(out, 0x80|127), l[:]...)
	}
	mask := []byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

func TestWebSocketEcho(t *testing.T) {
	big := bytes.Repeat([]byte("ab"), 40000) // 64-bit length form
	var in bytes.Buffer
	in.Write(maskedFrame(true, wsText, []byte("hello")))
	in.Write(maskedFrame(false, wsBinary, []byte{0, 1}))
	in.Write(maskedFrame(true, wsPing, []byte("p"))) // interleaved control frame
	in.Write(maskedFrame(true, wsContinuation, []byte{2}))
	in.Write(maskedFrame(true, wsBinary, big))
	in.Write(maskedFrame(true, wsClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}))
	var outBuf bytes.Buffer
	w := bufio.NewWriter(&outBuf)
	if err := wsEcho(&in, w); err != io.EOF {
		t.Fatalf("wsEcho: %v", err)
	}
	want := []struct {
		op      byte
		payload []byte
	}{
		{wsText, []byte("hello")}, {wsPong, []byte("p")}, {wsBinary, []byte{0, 1, 2}},
		{wsBinary, big}, {wsClose, []byte{0x03, 0xe8}},
	}
	for i, wf := range want {
		f, err := readWSFrame(&outBuf, 1<<20)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !f.fin || f.masked || f.opcode != wf.op || !bytes.Equal(f.payload, wf.payload) {
			t.Fatalf("frame %d: got op %d fin %v masked %v len %d", i, f.opcode, f.fin, f.masked, len(f.payload))
		}
	}
	if outBuf.Len() != 0 {
		t.Fatalf("%d extra bytes", outBuf.Len())
	}

	// An unmasked client frame is a protocol error answered with close 1002.
	outBuf.Reset()
	w = bufio.NewWriter(&outBuf)
	if err := wsEcho(bytes.NewReader([]byte{0x81, 0x01, 'x'}), w); err == nil || err == io.EOF {
		t.Fatalf("unmasked frame: %v", err)
	}
	f, err := readWSFrame(&outBuf, 1<<20)
	if err != nil || f.opcode != wsClose || binary.BigEndian.Uint16(f.payload) != 1002 {
		t.Fatalf("close reply: %+v %v", f, err)
	}
}

func TestBytesRoute(t *testing.T) {
	for p, want := range map[string]int64{"/bytes/0": 0, "/bytes/10": 10, "/a/bytes/7": 7} {
		if n, ok := bytesRoute(p); !ok || n != want {
			t.Errorf("%s: %d %v", p, n, ok)
		}
	}
	for _, p := range []string{"/bytes/", "/bytes/x", "/bytes/-1", "/bytesx/1", "/"} {
		if _, ok := bytesRoute(p); ok {
			t.Errorf("%s matched", p)
		}
	}
}
