package listener

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h.
const ip6tSoOriginalDst = 80

// socketOriginalDst reads the pre-NAT destination of a redirected
// connection with getsockopt(SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
func socketOriginalDst(c net.Conn) (*net.TCPAddr, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("original_dst: not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	var out *net.TCPAddr
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local != nil && local.IP.To4() == nil {
			// sockaddr_in6 comes back in the IPv6MTUInfo layout: family,
			// port, flowinfo, address, scope.
			mi, e := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSoOriginalDst)
			if e != nil {
				serr = e
				return
			}
			// The port field holds network-order bytes.
			port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&mi.Addr.Port))[:])
			out = &net.TCPAddr{IP: net.IP(mi.Addr.Addr[:]).To16(), Port: int(port)}
			return
		}
		mr, e := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if e != nil {
			serr = e
			return
		}
		// sockaddr_in: family (2), port (2, network order), address (4).
		b := mr.Multiaddr
		out = &net.TCPAddr{IP: net.IPv4(b[4], b[5], b[6], b[7]), Port: int(binary.BigEndian.Uint16(b[2:4]))}
	})
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return out, nil
}
