package main

// The DNS wire format (RFC 1035 section 4), as much of it as the box's
// resolver needs: a query with exactly one question in, a reply with A
// records out. The bytes come from the guest, so the parser trusts nothing:
// it checks every length before it reads and never follows a compression
// pointer. Anything after the question (an EDNS OPT record, say) is ignored;
// replies carry no OPT, so they stay within the classic 512 bytes.

import (
	"encoding/binary"
	"errors"
	"net"
)

const (
	dnsHeaderLen = 12
	dnsMaxUDP    = 512 // the largest reply; past it, answers are dropped and TC set
	dnsMaxName   = 255 // a name's wire length: its length bytes, labels and root
	dnsAnswerLen = 16  // one A record: pointer, type, class, TTL, length, address
	dnsTTL       = 60  // seconds

	typeA    = 1
	typeAAAA = 28
	classIN  = 1

	rcodeOK       = 0
	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNXDomain = 3
	rcodeNotImp   = 4
	rcodeRefused  = 5

	flagQR = 0x8000 // a response
	flagTC = 0x0200 // truncated
	flagRD = 0x0100 // recursion desired (copied from the query)
	flagRA = 0x0080 // recursion available
)

var (
	errNotQuery    = errors.New("dns: not a standard query") // dropped, unanswered
	errBadQuestion = errors.New("dns: malformed question")   // answered FORMERR
)

type dnsQuery struct {
	id       uint16
	rd       bool
	question []byte // as received: name, type, class (echoed in the reply; nil if malformed)
	name     string // lowercase ASCII, no trailing dot; '.' or '\' inside a label escaped with '\'
	qtype    uint16
	qclass   uint16
}

// parseQuery reads a query. errNotQuery: no readable header, or not a
// standard query (a response, or an OPCODE other than QUERY); the packet is
// dropped. errBadQuestion: the header is readable (the returned query has
// its ID and RD) but the question is not; the answer is FORMERR.
func parseQuery(b []byte) (*dnsQuery, error) {
	if len(b) < dnsHeaderLen {
		return nil, errNotQuery
	}
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&flagQR != 0 || (flags>>11)&0xf != 0 {
		return nil, errNotQuery
	}
	q := &dnsQuery{id: binary.BigEndian.Uint16(b), rd: flags&flagRD != 0}
	if binary.BigEndian.Uint16(b[4:]) != 1 { // QDCOUNT
		return q, errBadQuestion
	}
	var name []byte
	i := dnsHeaderLen
	for {
		if i >= len(b) {
			return q, errBadQuestion
		}
		n := int(b[i])
		if n == 0 {
			i++
			break
		}
		if n&0xc0 != 0 { // a compression pointer, or an obsolete label type
			return q, errBadQuestion
		}
		// the label, and at least the root byte after it, within the packet and the name limit
		if i+1+n >= len(b) || i+1+n+1-dnsHeaderLen > dnsMaxName {
			return q, errBadQuestion
		}
		if len(name) > 0 {
			name = append(name, '.')
		}
		for _, c := range b[i+1 : i+1+n] {
			switch {
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c == '.' || c == '\\': // keeps "a.b" as one label apart from two (validName refuses it)
				name = append(name, '\\')
			}
			name = append(name, c)
		}
		i += 1 + n
	}
	if i+4 > len(b) {
		return q, errBadQuestion
	}
	q.qtype = binary.BigEndian.Uint16(b[i:])
	q.qclass = binary.BigEndian.Uint16(b[i+2:])
	q.question = b[dnsHeaderLen : i+4]
	q.name = string(name)
	return q, nil
}

// reply answers q with rcode and one A record per IPv4 address, as many
// as fit in dnsMaxUDP (TC set if some did not). The answers point at the
// question's name (0xC00C) instead of repeating it.
func (q *dnsQuery) reply(rcode int, addrs []net.IP) []byte {
	flags := uint16(flagQR|flagRA) | uint16(rcode&0xf)
	if q.rd {
		flags |= flagRD
	}
	if room := (dnsMaxUDP - dnsHeaderLen - len(q.question)) / dnsAnswerLen; len(addrs) > room {
		addrs, flags = addrs[:room], flags|flagTC
	}
	qdcount := uint16(0)
	if q.question != nil {
		qdcount = 1
	}
	b := make([]byte, 0, dnsHeaderLen+len(q.question)+dnsAnswerLen*len(addrs))
	for _, v := range []uint16{q.id, flags, qdcount, uint16(len(addrs)), 0, 0} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	b = append(b, q.question...)
	for _, ip := range addrs {
		for _, v := range []uint16{0xc000 | dnsHeaderLen, typeA, classIN} {
			b = binary.BigEndian.AppendUint16(b, v)
		}
		b = binary.BigEndian.AppendUint32(b, dnsTTL)
		b = binary.BigEndian.AppendUint16(b, net.IPv4len)
		b = append(b, ip.To4()...)
	}
	return b
}
