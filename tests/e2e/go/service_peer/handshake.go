package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
)

// The handshake is encoded and decoded by the `capnp` tool: there is no Go Cap'n Proto library
// here. Only the stream framing (segment table + segments) is handled in Go, because the exact
// length of the response must be known: the yamux session starts on the very next byte.

// maxFrameSegments bounds the segment table of a message we read (the master itself rejects
// requests with more than 511 segments).
const maxFrameSegments = 512

// maxResponseBytes bounds a handshake response (a few dozen bytes in practice).
const maxResponseBytes = 1 << 20

// readFrame reads exactly one Cap'n Proto message in the standard unpacked stream framing from r
// and returns all of its bytes (segment table included), ready to be fed to `capnp decode`.
// It never reads past the end of the message. maxBytes bounds the whole message.
func readFrame(r io.Reader, maxBytes int) ([]byte, error) {
	var first [4]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return nil, fmt.Errorf("reading segment count: %w", err)
	}
	count := uint64(binary.LittleEndian.Uint32(first[:])) + 1
	if count > maxFrameSegments {
		return nil, fmt.Errorf("message has %d segments (limit %d)", count, maxFrameSegments)
	}
	// The table is 4 bytes of count plus 4 bytes per segment, padded to a multiple of 8.
	tableLen := int(4 + 4*count)
	if tableLen%8 != 0 {
		tableLen += 4
	}
	if tableLen > maxBytes {
		return nil, fmt.Errorf("segment table of %d bytes exceeds limit %d", tableLen, maxBytes)
	}
	msg := make([]byte, tableLen)
	copy(msg, first[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, fmt.Errorf("reading segment table: %w", err)
	}
	var words uint64
	for i := uint64(0); i < count; i++ {
		words += uint64(binary.LittleEndian.Uint32(msg[4+4*i:]))
	}
	total := uint64(tableLen) + words*8
	if total > uint64(maxBytes) {
		return nil, fmt.Errorf("message of %d bytes exceeds limit %d", total, maxBytes)
	}
	full := make([]byte, total)
	copy(full, msg)
	if _, err := io.ReadFull(r, full[tableLen:]); err != nil {
		return nil, fmt.Errorf("reading %d segment words: %w", words, err)
	}
	return full, nil
}

// capnpQuote renders s as a Cap'n Proto text-format string literal. The text parser rejects a
// raw newline inside a literal, so control characters are escaped (octal: exactly three digits,
// never ambiguous with a following character, unlike \x). Bytes >= 0x80 pass through as is.
func capnpQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 || c == 0x7f {
				fmt.Fprintf(&b, `\%03o`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// requestOptions is what the service asks the master for.
type requestOptions struct {
	Version       uint
	Token         string
	Address       string
	Port          int
	HTTP          bool
	DomainSuffix  string
	PathPrefix    string
	CertChainPem  string
	PrivateKeyPem string
	TLS           bool
	ProxyProtocol bool
}

// requestText builds the text-format HandshakeRequest for `capnp encode`.
func requestText(o requestOptions) string {
	var sock []string
	if o.Address != "" {
		sock = append(sock, "address = "+capnpQuote(o.Address))
	}
	sock = append(sock, fmt.Sprintf("port = %d", o.Port))
	if o.HTTP {
		sock = append(sock, fmt.Sprintf("http = (domainSuffix = %s, pathPrefix = %s)",
			capnpQuote(o.DomainSuffix), capnpQuote(o.PathPrefix)))
	}
	if o.TLS {
		sock = append(sock, fmt.Sprintf("tls = (certificateChainPem = %s, privateKeyPem = %s)",
			capnpQuote(o.CertChainPem), capnpQuote(o.PrivateKeyPem)))
	}
	sock = append(sock, fmt.Sprintf("proxyProtocol = %t", o.ProxyProtocol))
	return fmt.Sprintf("(version = %d, token = %s, socket = (%s))",
		o.Version, capnpQuote(o.Token), strings.Join(sock, ", "))
}

// runCapnp runs the capnp tool with stdin and returns stdout. capnp prints partial output and
// still writes bytes on some errors, so only a zero exit status counts as success.
func runCapnp(capnpBin string, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command(capnpBin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", capnpBin, strings.Join(args, " "), err,
			strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// encodeRequest turns a text-format HandshakeRequest into exactly one framed binary message.
func encodeRequest(capnpBin, schema, text string) ([]byte, error) {
	out, err := runCapnp(capnpBin, []byte(text+"\n"), "encode", schema, "HandshakeRequest")
	if err != nil {
		return nil, err
	}
	// `capnp encode` emits one message per literal; insist on exactly one.
	frame, err := readFrame(bytes.NewReader(out), len(out))
	if err != nil {
		return nil, fmt.Errorf("capnp encode output is not a framed message: %v", err)
	}
	if len(frame) != len(out) {
		return nil, fmt.Errorf("capnp encode produced %d bytes but the first message has %d",
			len(out), len(frame))
	}
	return out, nil
}

// decodeText runs `capnp decode --short` on one framed message of the given struct type.
func decodeText(capnpBin, schema, typeName string, frame []byte) (string, error) {
	out, err := runCapnp(capnpBin, frame, "decode", "--short", schema, typeName)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// handshakeResult is the decoded HandshakeResponse.
type handshakeResult struct {
	Accepted       bool
	RegistrationID string
	BoundAddress   string
	Code           string
	Message        string
}

// interpretResponse turns `capnp decode --short` output of a HandshakeResponse into a result.
// Fields left at their default may be missing from the text and read as defaults. A response
// whose union member is absent (a null pointer, printed as `()`) is treated as malformed.
func interpretResponse(text string) (handshakeResult, error) {
	v, err := parseCapnpText(text)
	if err != nil {
		return handshakeResult{}, fmt.Errorf("unparsable response %q: %v", text, err)
	}
	top, ok := v.(map[string]interface{})
	if !ok {
		return handshakeResult{}, fmt.Errorf("response %q is not a struct", text)
	}
	if a, ok := top["accepted"]; ok {
		m, ok := a.(map[string]interface{})
		if !ok {
			return handshakeResult{}, fmt.Errorf("accepted is not a struct in %q", text)
		}
		res := handshakeResult{Accepted: true, RegistrationID: "0"}
		if id, ok := m["registrationId"]; ok {
			n, ok := id.(capnpNumber)
			if !ok {
				return handshakeResult{}, fmt.Errorf("registrationId is not a number in %q", text)
			}
			res.RegistrationID = string(n)
		}
		if addr, ok := m["boundAddress"]; ok {
			s, ok := addr.(string)
			if !ok {
				return handshakeResult{}, fmt.Errorf("boundAddress is not text in %q", text)
			}
			res.BoundAddress = s
		}
		return res, nil
	}
	if r, ok := top["rejected"]; ok {
		m, ok := r.(map[string]interface{})
		if !ok {
			return handshakeResult{}, fmt.Errorf("rejected is not a struct in %q", text)
		}
		res := handshakeResult{Code: "badRequest"} // the enum's default
		if c, ok := m["code"]; ok {
			id, ok := c.(capnpIdent)
			if !ok {
				// An enum value unknown to this schema prints as a number.
				if n, isNum := c.(capnpNumber); isNum {
					id = capnpIdent(n)
				} else {
					return handshakeResult{}, fmt.Errorf("code is not an enumerant in %q", text)
				}
			}
			res.Code = string(id)
		}
		if msg, ok := m["message"]; ok {
			s, ok := msg.(string)
			if !ok {
				return handshakeResult{}, fmt.Errorf("message is not text in %q", text)
			}
			res.Message = s
		}
		return res, nil
	}
	return handshakeResult{}, fmt.Errorf("response %q has neither accepted nor rejected", text)
}

// --- a small parser for the Cap'n Proto text format as printed by `capnp decode --short` ---

type capnpNumber string // kept as text: UInt64 values do not fit a float64
type capnpIdent string  // enumerants, true/false, void

type textParser struct {
	s   string
	pos int
}

// parseCapnpText parses a value: a struct becomes map[string]interface{}, a list
// []interface{}, text a Go string, data (printed as a byte string) a Go string too.
func parseCapnpText(s string) (interface{}, error) {
	p := &textParser{s: s}
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.s) {
		return nil, fmt.Errorf("trailing input at offset %d", p.pos)
	}
	return v, nil
}

func (p *textParser) skipSpace() {
	for p.pos < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.pos]) >= 0 {
		p.pos++
	}
}

func (p *textParser) expect(c byte) error {
	p.skipSpace()
	if p.pos >= len(p.s) || p.s[p.pos] != c {
		return fmt.Errorf("expected %q at offset %d", c, p.pos)
	}
	p.pos++
	return nil
}

func isIdentByte(c byte, first bool) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
}

func (p *textParser) ident() (string, error) {
	p.skipSpace()
	start := p.pos
	for p.pos < len(p.s) && isIdentByte(p.s[p.pos], p.pos == start) {
		p.pos++
	}
	if start == p.pos {
		return "", fmt.Errorf("expected identifier at offset %d", start)
	}
	return p.s[start:p.pos], nil
}

func (p *textParser) value() (interface{}, error) {
	p.skipSpace()
	if p.pos >= len(p.s) {
		return nil, errors.New("unexpected end of input")
	}
	c := p.s[p.pos]
	switch {
	case c == '(':
		p.pos++
		m := map[string]interface{}{}
		p.skipSpace()
		if p.pos < len(p.s) && p.s[p.pos] == ')' {
			p.pos++
			return m, nil
		}
		for {
			name, err := p.ident()
			if err != nil {
				return nil, err
			}
			if err := p.expect('='); err != nil {
				return nil, err
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			m[name] = v
			p.skipSpace()
			if p.pos < len(p.s) && p.s[p.pos] == ',' {
				p.pos++
				continue
			}
			if err := p.expect(')'); err != nil {
				return nil, err
			}
			return m, nil
		}
	case c == '[':
		p.pos++
		var l []interface{}
		p.skipSpace()
		if p.pos < len(p.s) && p.s[p.pos] == ']' {
			p.pos++
			return l, nil
		}
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			l = append(l, v)
			p.skipSpace()
			if p.pos < len(p.s) && p.s[p.pos] == ',' {
				p.pos++
				continue
			}
			if err := p.expect(']'); err != nil {
				return nil, err
			}
			return l, nil
		}
	case c == '"':
		return p.quoted()
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		p.pos++
		for p.pos < len(p.s) && strings.IndexByte("0123456789abcdefABCDEFxX.+-", p.s[p.pos]) >= 0 {
			// Stop a '-' or '+' that is not an exponent sign.
			if (p.s[p.pos] == '-' || p.s[p.pos] == '+') && !strings.ContainsAny(p.s[p.pos-1:p.pos], "eE") {
				break
			}
			p.pos++
		}
		return capnpNumber(p.s[start:p.pos]), nil
	case isIdentByte(c, true):
		id, err := p.ident()
		if err != nil {
			return nil, err
		}
		return capnpIdent(id), nil
	}
	return nil, fmt.Errorf("unexpected %q at offset %d", c, p.pos)
}

// quoted reads a C-style string literal: \a \b \f \n \r \t \v \\ \' \" \xHH and \ooo.
func (p *textParser) quoted() (string, error) {
	p.pos++ // opening quote
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		p.pos++
		if c == '"' {
			return b.String(), nil
		}
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if p.pos >= len(p.s) {
			break
		}
		e := p.s[p.pos]
		p.pos++
		switch e {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '\\', '\'', '"', '?':
			b.WriteByte(e)
		case 'x':
			start := p.pos
			for p.pos < len(p.s) && p.pos-start < 2 && strings.IndexByte("0123456789abcdefABCDEF", p.s[p.pos]) >= 0 {
				p.pos++
			}
			n, err := strconv.ParseUint(p.s[start:p.pos], 16, 8)
			if err != nil {
				return "", fmt.Errorf("bad \\x escape at offset %d", start)
			}
			b.WriteByte(byte(n))
		case '0', '1', '2', '3', '4', '5', '6', '7':
			start := p.pos - 1
			for p.pos < len(p.s) && p.pos-start < 3 && p.s[p.pos] >= '0' && p.s[p.pos] <= '7' {
				p.pos++
			}
			n, err := strconv.ParseUint(p.s[start:p.pos], 8, 16)
			if err != nil || n > 0xff {
				return "", fmt.Errorf("bad octal escape at offset %d", start)
			}
			b.WriteByte(byte(n))
		default:
			return "", fmt.Errorf("unknown escape \\%c at offset %d", e, p.pos-1)
		}
	}
	return "", errors.New("unterminated string")
}
