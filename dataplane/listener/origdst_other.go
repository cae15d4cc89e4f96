//go:build !linux

package listener

import (
	"errors"
	"net"
)

// socketOriginalDst needs Linux netfilter; elsewhere no connection is
// ever redirected.
func socketOriginalDst(net.Conn) (*net.TCPAddr, error) {
	return nil, errors.New("original_dst: only supported on Linux")
}
