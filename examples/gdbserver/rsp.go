package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"sync"
)

// conn speaks the remote serial protocol's framing: $packet#cs, the +/-
// acknowledgements (until QStartNoAckMode), %notifications, the
// interrupt byte and the binary escapes.
type conn struct {
	r     *bufio.Reader
	w     io.Writer
	mu    sync.Mutex // writes come from one goroutine, but a failed one is logged from another
	noAck bool
	debug io.Writer // packets both ways, with -debug
}

// incoming is a packet from gdb, or its interrupt (^C) byte.
type incoming struct {
	pkt       string
	interrupt bool
}

// read returns packets as they come; the channel closes at end of input.
func (c *conn) read(out chan<- incoming) {
	defer close(out)
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			return
		}
		switch b {
		case 0x03:
			out <- incoming{interrupt: true}
		case '$':
			body, err := c.r.ReadString('#')
			if err != nil {
				return
			}
			var cs [2]byte
			if _, err := io.ReadFull(c.r, cs[:]); err != nil {
				return
			}
			body = body[:len(body)-1]
			if !c.noAck {
				c.mu.Lock()
				c.w.Write([]byte{'+'})
				c.mu.Unlock()
			}
			if c.debug != nil {
				fmt.Fprintf(c.debug, "<- %q\n", body)
			}
			out <- incoming{pkt: unescape(body)}
		}
		// '+', '-' and noise between packets are ignored: the transport is
		// reliable, so a retransmission is never needed.
	}
}

func (c *conn) frame(lead byte, body string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.debug != nil {
		fmt.Fprintf(c.debug, "-> %c%q\n", lead, body)
	}
	var sum byte
	for i := 0; i < len(body); i++ {
		sum += body[i]
	}
	fmt.Fprintf(c.w, "%c%s#%02x", lead, body, sum)
}

// send sends a reply packet.
func (c *conn) send(body string) { c.frame('$', body) }

// notify sends a notification (non-stop mode's %Stop), never acknowledged.
func (c *conn) notify(body string) { c.frame('%', body) }

// unescape undoes the binary escapes of X packets: '}' then the byte xor
// 0x20. Other packets never hold '}', so this is done for all.
func unescape(s string) string {
	if !strings.Contains(s, "}") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '}' && i+1 < len(s) {
			i++
			b.WriteByte(s[i] ^ 0x20)
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// escape makes binary data safe in a reply (qXfer): $ # } * are escaped.
func escape(data []byte) string {
	var b strings.Builder
	for _, c := range data {
		switch c {
		case '$', '#', '}', '*':
			b.WriteByte('}')
			b.WriteByte(c ^ 0x20)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
